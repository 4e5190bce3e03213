package async

// A job's life, as its record in storage tells it. Every change that two
// instances could race is decided under the storage's cluster-wide lock for
// the job (withJobRecord: Lock, load the record, change it only if it still
// says running, Unlock). A terminal state never changes; a record only goes
// away, deleted by a client or by the sweep.
//
//	from      event                                 decided by, under the job's lock           to
//	—         submitter stops waiting (202)         submitter (a new id: no lock needed)       running
//	running   a refresh period passes               the running instance (refreshRecord)       running, updated = now
//	running   handlers returned                     the running instance (commitResult/settle) succeeded | failed | canceled
//	running   `timeout` passed                      the running instance, at once              failed, "timeout: ran longer than …"
//	running   a storage operation failed            the running instance, retried until stored failed, "storage: …"
//	running   caddy stop                            the running instance                       canceled, "server stopped"
//	running   not refreshed for three periods       whichever instance sees it first           failed, "instance lost"
//	any       DELETE (204)                          any instance                               gone
//	terminal  `keep` passed since it ended          the sweep of any instance                  gone
//	terminal  anything else                         —                                          unchanged: the transition loses
//	gone      anything                              —                                          gone: the transition loses
//
// The running instance learns of a transition decided elsewhere at its
// next refresh or when it commits: it then cancels its handlers' context
// and stores nothing (a result it wrote is deleted again). The lock is
// held for one Load and one Store of a record (a few hundred bytes); the
// result itself is written before the lock is taken, under a key no
// instance serves until the record says succeeded (see commitResult).

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
)

// lockWait bounds how long a transition waits for a job's lock. The
// file_system storage polls a held lock every second and takes over one
// not kept fresh for ten seconds (certmagic filestorage.go), so a lock
// left by a killed process is free well within it.
const lockWait = 30 * time.Second

// errGone: the job's record is not in storage, deleted by a client or
// expired; the transition lost.
var errGone = errors.New("job deleted")

// errSettled: the job's record is terminal already; the transition lost.
var errSettled = errors.New("job already ended")

// errLost is the cause a running instance cancels its job's handlers with
// when another instance declared the job lost (or otherwise ended it).
var errLost = errors.New("ended elsewhere: " + reasonLost)

// storageError is a job's failure to read or write its storage; its text
// is the job's reason.
type storageError struct{ err error }

func (e storageError) Error() string { return "storage: " + e.err.Error() }
func (e storageError) Unwrap() error { return e.err }

// timeoutError is the cause of a job that ran longer than `timeout`; its
// text is the job's reason.
type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string { return "timeout: ran longer than " + e.d.String() }

func jobLockName(id string) string { return jobKey(id) }

// withJobRecord runs fn with the job's record loaded under the job's lock:
// rec is nil when there is no record. fn may Store or Delete; nothing else
// may change the record meanwhile.
func withJobRecord(ctx context.Context, storage certmagic.Storage, id string, fn func(rec *jobRecord) error) error {
	lctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	if err := storage.Lock(lctx, jobLockName(id)); err != nil {
		return fmt.Errorf("locking job %s: %w", id, err)
	}
	defer func() { _ = storage.Unlock(context.WithoutCancel(ctx), jobLockName(id)) }()
	rec, err := loadJobRecord(ctx, storage, id)
	switch {
	case errors.Is(err, errNoRecord):
		return fn(nil)
	case err != nil:
		return err
	}
	return fn(&rec)
}

// lost reports whether a transition lost to another one: the job is gone
// or ended.
func lost(err error) bool { return errors.Is(err, errGone) || errors.Is(err, errSettled) }

// settle moves the job's record from running to a terminal state.
func (j *job) settle(ctx context.Context, status, reason string, resultSize int64) error {
	return withJobRecord(ctx, j.a.storage, j.id, func(cur *jobRecord) error {
		if cur == nil {
			return errGone
		}
		if cur.Status != statusRunning {
			return errSettled
		}
		now := time.Now()
		rec := j.record(status, reason, now)
		rec.Ended, rec.ResultSize = now, resultSize
		return storeJobRecord(ctx, j.a.storage, rec)
	})
}

// refreshRecord writes that the job still runs, if its record says so.
func (j *job) refreshRecord(ctx context.Context) error {
	return withJobRecord(ctx, j.a.storage, j.id, func(cur *jobRecord) error {
		if cur == nil {
			return errGone
		}
		if cur.Status != statusRunning {
			return errSettled
		}
		return storeJobRecord(ctx, j.a.storage, j.record(statusRunning, "", time.Now()))
	})
}

// declareLost ends a running job that was not refreshed for three periods
// as failed, "instance lost", and returns the record as it is now;
// declared says this call made that transition, which happens once in the
// cluster. A job refreshed meanwhile, or already ended, is returned
// unchanged.
func declareLost(ctx context.Context, storage certmagic.Storage, id string) (out jobRecord, declared bool, err error) {
	err = withJobRecord(ctx, storage, id, func(cur *jobRecord) error {
		if cur == nil {
			return errGone
		}
		out = *cur
		now := time.Now()
		if cur.Status != statusRunning || !cur.lostAt().Before(now) {
			return nil
		}
		out.Status, out.Reason, out.Ended = statusFailed, reasonLost, now
		if err := storeJobRecord(ctx, storage, out); err != nil {
			return err
		}
		declared = true
		return nil
	})
	return out, declared, err
}

// deleteJobFolder deletes everything stored of a job, whatever its state,
// and gives back the bytes its result counted in max_stored. ok is false
// if there was no record.
func deleteJobFolder(ctx context.Context, storage certmagic.Storage, id string) (ok bool, err error) {
	var size int64
	err = withJobRecord(ctx, storage, id, func(cur *jobRecord) error {
		if cur == nil {
			return errGone
		}
		if err := storage.Delete(ctx, jobKey(id)); err != nil {
			return err
		}
		if cur.Status == statusSucceeded {
			size = cur.ResultSize
		}
		return nil
	})
	if errors.Is(err, errGone) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if size > 0 {
		if err := releaseStored(ctx, storage, size); err != nil {
			return true, fmt.Errorf("giving back %d bytes of max_stored: %w", size, err)
		}
	}
	return true, nil
}
