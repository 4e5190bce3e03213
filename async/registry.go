package async

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
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
var registry = &jobRegistry{jobs: make(map[string]*job), sweepers: make(map[string]*sweeper)}

// errShutdown is the cause a job is cancelled with when Caddy stops.
var errShutdown = errors.New("server stopped")

// errDeleted is the cause a job is cancelled with by a DELETE.
var errDeleted = errors.New("deleted by the client")

type jobRegistry struct {
	// mu guards every field below, and the sweepers' fields it names.
	mu    sync.Mutex
	users int             // provisioned async configs
	jobs  map[string]*job // running in this process, by id
	// sweepers sweep each storage that a provisioned config uses, or
	// that still holds jobs of a config gone by a reload (sweep.go).
	sweepers map[string]*sweeper
	logger   *zap.Logger
	// quit is closed when the last async config has left: jobs stop
	// retrying to record their outcome in a storage that fails.
	quit chan struct{}
	// bodiesSwept is closed when the start's removal of body folders
	// left by dead processes is done (bodydir.go).
	bodiesSwept chan struct{}
}

// acquire joins an async config to the registry and to the sweeper of its
// storage. It reads no storage: the first sweep runs on the sweeper's own
// goroutine, not in Provision under the registry's lock.
func (g *jobRegistry) acquire(_ caddy.Context, a *Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.logger = a.logger
	g.users++
	if g.users == 1 {
		g.quit = make(chan struct{})
		g.bodiesSwept = make(chan struct{})
		go func(logger *zap.Logger, done chan<- struct{}) {
			defer close(done)
			removeDeadBodyDirs(logger)
		}(a.logger, g.bodiesSwept)
	}
	a.sweeper = g.sweeperFor(a)
	return nil
}

// release is acquire's counterpart; the last one cancels the running jobs
// and waits until each has recorded that, then stops the sweepers.
func (g *jobRegistry) release(a *Config) {
	g.mu.Lock()
	g.users--
	if s := a.sweeper; s != nil {
		s.configs--
	}
	if g.users > 0 {
		g.mu.Unlock()
		return
	}
	running := make([]*job, 0, len(g.jobs))
	for _, j := range g.jobs {
		running = append(running, j)
	}
	quit, bodiesSwept := g.quit, g.bodiesSwept
	g.mu.Unlock()
	for _, j := range running {
		j.cancel(errShutdown)
	}
	// A handler that ignores its context would hold `caddy stop` for
	// ever: wait a bounded time, after which such a job records its
	// outcome whenever it ends.
	deadline := time.NewTimer(shutdownWait)
	defer deadline.Stop()
wait:
	for _, j := range running {
		select {
		case <-j.ended:
		case <-deadline.C:
			g.logger.Warn("async jobs still running after being cancelled at shutdown", zap.Duration("waited", shutdownWait))
			break wait
		}
	}
	close(quit)
	g.stopSweepers()
	<-bodiesSwept
}

// shutdownWait bounds how long the last cleanup waits for cancelled jobs.
const shutdownWait = 10 * time.Second

// reserve adds a job if fewer than maxJobs run here; ok is false otherwise.
func (g *jobRegistry) reserve(j *job, maxJobs int) (ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.jobs) >= maxJobs {
		return false
	}
	g.jobs[j.id] = j
	j.quit = g.quit
	asyncRunning.Set(float64(len(g.jobs)))
	return true
}

// running is how many jobs run in this process.
func (g *jobRegistry) running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.jobs)
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
