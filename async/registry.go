package async

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// registry holds the jobs running in this process. It is package-level, not
// per handler, so that running jobs survive `caddy reload`: the new config's
// handlers join it before the old config's leave (Caddy provisions the new
// config before it stops the old one). A job keeps the old handler's next
// chain, as an in-flight request does across a reload. When the last async
// handler leaves, which is `caddy stop` after the servers' grace period
// (Caddy stops the apps, then cleans up the modules), the running jobs are
// cancelled and report `canceled`; a reload to a config without async does
// the same.
var registry = &jobRegistry{jobs: make(map[string]*job)}

// errShutdown is the cause a job is cancelled with when Caddy stops.
var errShutdown = errors.New("server stopped")

// errDeleted is the cause a job is cancelled with by a DELETE.
var errDeleted = errors.New("deleted by the client")

type jobRegistry struct {
	// mu guards every field below.
	mu    sync.Mutex
	users int             // provisioned async configs
	jobs  map[string]*job // running in this process, by id
	// stored is how many result bytes this process counts in storage:
	// scanned from storage when the first async config is provisioned,
	// then kept up to date by this process's own writes and deletes.
	// Results that other instances store later are not seen until a
	// restart, so a cluster of N instances may hold up to N × max_stored.
	stored     int64
	sweepEvery time.Duration
	storage    certmagic.Storage // the most recently provisioned config's
	logger     *zap.Logger
	stopSweep  chan struct{}
	sweepDone  chan struct{}
	cursor     int // where the next sweep starts in the listing
}

// maxSweepJobs bounds one sweep's work: it reads at most this many job
// records (one Load each, plus the Deletes of those expired), after one
// List of the job folder. With the fastest sweep period (250ms) that is at
// most 256 reads a second.
const maxSweepJobs = 64

// acquire joins an async config to the registry; the first one starts the
// sweeper and counts what storage holds.
func (g *jobRegistry) acquire(ctx caddy.Context, a *Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.storage = a.storage
	g.logger = a.logger
	// The sweep runs four times per keep, so that an expired result is
	// gone at most keep/4 after it expired, and at least every minute.
	every := min(max(a.keep/4, 250*time.Millisecond), time.Minute)
	if g.users == 0 || every < g.sweepEvery {
		g.sweepEvery = every
	}
	g.users++
	if g.users > 1 {
		return nil
	}
	// Counting is one List and one Load per job, once per process start,
	// bounded by a minute so that a slow storage cannot hold a config load
	// forever (then the count starts lower than it should).
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	g.stored = countStored(sctx, g.storage)
	cancel()
	g.cursor = 0
	g.stopSweep = make(chan struct{})
	g.sweepDone = make(chan struct{})
	go g.sweepLoop(g.stopSweep, g.sweepDone)
	return nil
}

// release is acquire's counterpart; the last one cancels the running jobs
// and waits until each has recorded that, then stops the sweeper.
func (g *jobRegistry) release() {
	g.mu.Lock()
	g.users--
	if g.users > 0 {
		g.mu.Unlock()
		return
	}
	running := make([]*job, 0, len(g.jobs))
	for _, j := range g.jobs {
		running = append(running, j)
	}
	stop, done := g.stopSweep, g.sweepDone
	g.mu.Unlock()
	for _, j := range running {
		j.cancel(errShutdown)
	}
	// A handler that ignores its context would hold `caddy stop` for
	// ever: wait a bounded time, after which such a job records its
	// outcome whenever it ends.
	deadline := time.NewTimer(shutdownWait)
	defer deadline.Stop()
	for _, j := range running {
		select {
		case <-j.ended:
		case <-deadline.C:
			g.logger.Warn("async jobs still running after being cancelled at shutdown", zap.Duration("waited", shutdownWait))
			close(stop)
			<-done
			return
		}
	}
	close(stop)
	<-done
}

// shutdownWait bounds how long the last cleanup waits for cancelled jobs.
const shutdownWait = 10 * time.Second

// reserve adds a job if fewer than maxJobs run and the stored results are
// under maxStored; ok is false otherwise.
func (g *jobRegistry) reserve(j *job, maxJobs int, maxStored int64) (ok bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.jobs) >= maxJobs {
		return false, "max_jobs"
	}
	if g.stored >= maxStored {
		return false, "max_stored"
	}
	g.jobs[j.id] = j
	asyncRunning.Set(float64(len(g.jobs)))
	return true, ""
}

func (g *jobRegistry) remove(j *job) {
	g.mu.Lock()
	delete(g.jobs, j.id)
	asyncRunning.Set(float64(len(g.jobs)))
	g.mu.Unlock()
}

func (g *jobRegistry) lookup(id string) *job {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.jobs[id]
}

// addStored reserves n bytes of results if they fit under limit.
func (g *jobRegistry) addStored(n, limit int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stored+n > limit {
		return false
	}
	g.stored += n
	return true
}

// subStored forgets n bytes; the count never goes below zero, which it
// would when this instance deletes what another one stored.
func (g *jobRegistry) subStored(n int64) {
	g.mu.Lock()
	g.stored = max(g.stored-n, 0)
	g.mu.Unlock()
}

// snapshot lists the running jobs for the admin API, oldest first.
func (g *jobRegistry) snapshot() []*job {
	g.mu.Lock()
	out := make([]*job, 0, len(g.jobs))
	for _, j := range g.jobs {
		out = append(out, j)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b *job) int { return a.created.Compare(b.created) })
	return out
}

// sweepLoop deletes expired jobs from storage until stop is closed.
func (g *jobRegistry) sweepLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	for {
		g.mu.Lock()
		every := g.sweepEvery
		g.mu.Unlock()
		t := time.NewTimer(every)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		g.sweepOnce(ctx)
	}
}

// sweepOnce reads up to maxSweepJobs job records, continuing where the
// last sweep stopped, and deletes those whose keep has run out.
func (g *jobRegistry) sweepOnce(ctx context.Context) {
	g.mu.Lock()
	storage, logger, start := g.storage, g.logger, g.cursor
	g.mu.Unlock()
	ids, err := listJobIDs(ctx, storage)
	if err != nil {
		if ctx.Err() == nil {
			logger.Warn("listing async jobs for expiry", zap.Error(err))
		}
		return
	}
	if start >= len(ids) {
		start = 0
	}
	n := min(len(ids), maxSweepJobs)
	now := time.Now()
	for i := range n {
		id := ids[(start+i)%len(ids)]
		if g.lookup(id) != nil {
			continue
		}
		rec, err := loadJobRecord(ctx, storage, id)
		switch {
		case errors.Is(err, errNoRecord):
			// A folder without a record: left by a DELETE from another
			// instance (its cancel marker) or a crash between writes.
			// Remove it once it is older than any job could be waiting
			// for its record.
			if info, err := storage.Stat(ctx, jobKey(id)); err == nil && now.Sub(info.Modified) > time.Hour {
				_ = storage.Delete(ctx, jobKey(id))
			}
			continue
		case err != nil:
			continue
		}
		if exp, ok := rec.expiry(); ok && now.After(exp) {
			if err := storage.Delete(ctx, jobKey(id)); err != nil {
				logger.Warn("deleting an expired async job", zap.String("id", id), zap.Error(err))
				continue
			}
			g.subStored(rec.ResultSize)
			asyncOutcomes.WithLabelValues("expired").Inc()
		}
	}
	g.mu.Lock()
	g.cursor = start + n
	g.mu.Unlock()
}

// countStored sums the result sizes of the job records in storage.
func countStored(ctx context.Context, storage certmagic.Storage) int64 {
	ids, err := listJobIDs(ctx, storage)
	if err != nil {
		return 0
	}
	var total int64
	for _, id := range ids {
		if rec, err := loadJobRecord(ctx, storage, id); err == nil {
			total += rec.ResultSize
		}
	}
	return total
}
