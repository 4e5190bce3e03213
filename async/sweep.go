package async

// The sweep deletes what expired: each storage that a provisioned config
// uses has one sweeper goroutine in this process. It passes over every job
// folder every min(keep/4, 1m) (at least 250 ms apart), with no cap on how
// many records one pass handles, so it keeps up with any job rate: a record
// is gone at most `keep` + the sweep period + the time of one pass after
// its job ended. A pass is one List of the job folder and one Load per job,
// plus a Delete per expired job, none of it under a lock that requests
// take: only deleting a result that counts in max_stored takes the job's
// lock (so that its bytes are given back once). The pass also declares lost
// the running jobs that were not refreshed for three periods, so that
// nobody needs to poll them for that.
//
// A storage that no config uses any more after a reload (its jobs ran on
// under the old config) is still swept until a pass finds no job in it;
// `caddy stop` ends every sweeper.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// sweeper sweeps one storage. Its fields are guarded by registry.mu.
type sweeper struct {
	key     string // storageIdentity of storage
	storage certmagic.Storage
	logger  *zap.Logger
	events  *Config // the newest config using storage, for emitRecord
	every   time.Duration
	configs int // provisioned configs that use this storage
	stop    chan struct{}
	done    chan struct{}
}

// orphanAge is how old a job folder without a record must be before the
// sweep removes it: such a folder is a result written by a process killed
// before it recorded the job's end, or a record being written right now.
const orphanAge = time.Hour

// sweepPeriod is a quarter of keep, from 250 ms to one minute.
func sweepPeriod(keep time.Duration) time.Duration {
	return min(max(keep/4, 250*time.Millisecond), time.Minute)
}

// storageIdentity tells storages apart: certmagic's storages describe
// themselves (FileStorage's String is its path), and two configs with
// the same storage settings share the sweeper.
func storageIdentity(s certmagic.Storage) string {
	if st, ok := s.(fmt.Stringer); ok {
		return fmt.Sprintf("%T:%s", s, st.String())
	}
	return fmt.Sprintf("%T:%v", s, s)
}

// sweeperFor returns the sweeper of a's storage, started if new; the
// caller holds g.mu.
func (g *jobRegistry) sweeperFor(a *Config) *sweeper {
	key := storageIdentity(a.storage)
	every := sweepPeriod(a.keep)
	s := g.sweepers[key]
	if s == nil {
		s = &sweeper{key: key, every: every, stop: make(chan struct{}), done: make(chan struct{})}
		g.sweepers[key] = s
		go g.sweepLoop(s)
	}
	// The newest config's storage value: an older one may be cleaned up.
	// Its events app is the one a job it declares lost is reported to.
	s.storage, s.logger, s.events = a.storage, a.logger, a
	s.every = min(s.every, every)
	s.configs++
	return s
}

// stopSweepers ends every sweeper and waits for them.
func (g *jobRegistry) stopSweepers() {
	g.mu.Lock()
	all := make([]*sweeper, 0, len(g.sweepers))
	for k, s := range g.sweepers {
		all = append(all, s)
		delete(g.sweepers, k)
	}
	g.mu.Unlock()
	for _, s := range all {
		close(s.stop)
		<-s.done
	}
}

func (g *jobRegistry) sweepLoop(s *sweeper) {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTimer(0) // the first pass right after start
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		empty := g.sweepPass(ctx, s)
		g.mu.Lock()
		if s.configs == 0 && empty && g.sweepers[s.key] == s {
			delete(g.sweepers, s.key)
			g.mu.Unlock()
			return
		}
		every := s.every
		g.mu.Unlock()
		t.Reset(every)
	}
}

// sweepPass handles every job folder once; empty is true when the storage
// holds no job.
func (g *jobRegistry) sweepPass(ctx context.Context, s *sweeper) (empty bool) {
	g.mu.Lock()
	storage, logger, events := s.storage, s.logger, s.events
	g.mu.Unlock()
	ids, err := listJobIDs(ctx, storage)
	if err != nil {
		if ctx.Err() == nil {
			logger.Warn("listing async jobs for expiry", zap.Error(err))
		}
		return false
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return false
		}
		if g.lookup(id) != nil {
			continue // running here: its own goroutine keeps its record
		}
		g.sweepJob(ctx, storage, logger, events, id)
	}
	return len(ids) == 0
}

func (g *jobRegistry) sweepJob(ctx context.Context, storage certmagic.Storage, logger *zap.Logger, events *Config, id string) {
	now := time.Now()
	rec, err := loadJobRecord(ctx, storage, id)
	switch {
	case errors.Is(err, errNoRecord):
		if info, err := storage.Stat(ctx, jobKey(id)); err == nil && now.Sub(info.Modified) > orphanAge {
			_ = storage.Delete(ctx, jobKey(id))
		}
		return
	case err != nil:
		return
	}
	if rec.Status == statusRunning {
		if rec.lostAt().Before(now) {
			rec, declared, err := declareLost(ctx, storage, id)
			if err != nil && !lost(err) && ctx.Err() == nil {
				logger.Warn("declaring an async job lost", zap.String("id", id), zap.Error(err))
			}
			if declared && events != nil {
				events.emitRecord(EventJobFailed, rec, rec.Status, rec.Reason)
			}
		}
		return
	}
	if now.Before(rec.Ended.Add(rec.Keep)) {
		return
	}
	if rec.ResultSize == 0 {
		// Nothing counted in max_stored, and a terminal record never
		// changes: no lock needed.
		err = storage.Delete(ctx, jobKey(id))
	} else {
		_, err = deleteJobFolder(ctx, storage, id)
	}
	if err != nil {
		if ctx.Err() == nil {
			logger.Warn("deleting an expired async job", zap.String("id", id), zap.Error(err))
		}
		return
	}
	asyncOutcomes.WithLabelValues("expired").Inc()
}
