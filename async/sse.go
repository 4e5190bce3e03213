package async

// Following a job from the status monitor, two ways:
//
//   - `Accept: text/event-stream` (Server-Sent Events, HTML Living Standard
//     §9.2, https://html.spec.whatwg.org/multipage/server-sent-events.html):
//     200 and an event whenever the status or the progress changes, each
//     `data:` line the JSON of the monitor's 200 body, a `: keep-alive`
//     comment every interval, the terminal status as the last event.
//   - `Prefer: processing` (draft-wright-http-progress, "Status Document
//     Request"): 102s with the latest Progress until the job ends, then the
//     monitor's answer.
//
// A job running in this process is followed through its live state (no
// polling); one running on another instance through its record in storage,
// read every `refresh` (the period at which the running instance writes
// it). Both run on the request's goroutine and end with the request.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/prefer"
	"go.uber.org/zap"
)

// wantsEventStream: a GET whose Accept names text/event-stream, as
// EventSource sends it (`Accept: text/event-stream`).
func wantsEventStream(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, line := range r.Header["Accept"] {
		for part := range strings.SplitSeq(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == "text/event-stream" && params["q"] != "0" && params["q"] != "0.0" && params["q"] != "0.00" && params["q"] != "0.000" {
				return true
			}
		}
	}
	return false
}

// wantsInterims: a GET or HEAD of the status document asking for 102s
// until the operation ends.
func wantsInterims(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		canSendInterim(r) && prefer.Has(r.Header["Prefer"], "processing")
}

// jobFollower follows one job's state.
type jobFollower struct {
	a     *Config
	rec   jobRecord // as last seen: from storage, with a local job's live progress
	local *job      // nil once the job ended or if it runs elsewhere
}

// snapshot is what a change is measured on.
func (f *jobFollower) key() [3]string {
	return [3]string{f.rec.Status, f.rec.Reason, f.rec.Progress}
}

func (f *jobFollower) terminal() bool { return f.rec.Status != statusRunning }

// follow calls changed with the job's state at once and after each change,
// and tick every interval, until the job's state is terminal (ended is
// true), the record is gone (a DELETE; gone), the context is done, or a
// callback fails.
func (f *jobFollower) follow(ctx context.Context, changed func(jobRecord) error, tick func() error) (ended, gone bool) {
	if f.local != nil && f.terminal() {
		f.local = nil
	}
	if err := changed(f.rec); err != nil || f.terminal() {
		return f.terminal(), false
	}
	keep := time.NewTicker(f.a.interimInterval())
	defer keep.Stop()
	var pollT *time.Ticker
	var poll <-chan time.Time
	defer func() {
		if pollT != nil {
			pollT.Stop()
		}
	}()
	for {
		before := f.key()
		var progressed, jobEnded <-chan struct{}
		if f.local == nil && pollT == nil {
			// The running instance writes the record every refresh.
			pollT = time.NewTicker(max(f.rec.Refresh, 10*time.Millisecond))
			poll = pollT.C
		}
		if f.local != nil {
			// The value read with the channel, not only on its wake-up:
			// a change that came with a keep-alive tick, when select
			// took the tick, is seen here.
			f.rec.Progress, progressed = f.local.live.get()
			jobEnded = f.local.ended
		}
		if f.key() != before {
			if err := changed(f.rec); err != nil {
				return false, false
			}
			before = f.key()
		}
		select {
		case <-ctx.Done():
			return false, false
		case <-keep.C:
			if err := tick(); err != nil {
				return false, false
			}
			continue
		case <-progressed:
			continue // read at the top
		case <-jobEnded:
			f.local = nil
			if !f.reload(ctx) {
				return false, true
			}
		case <-poll:
			if !f.reload(ctx) {
				return false, true
			}
		}
		if f.key() != before {
			if err := changed(f.rec); err != nil {
				return false, false
			}
		}
		if f.terminal() {
			return true, false
		}
	}
}

// reload reads the record from storage; false when it is gone (a DELETE).
func (f *jobFollower) reload(ctx context.Context) bool {
	rec, err := loadJobRecord(ctx, f.a.storage, f.rec.ID)
	if errors.Is(err, errNoRecord) {
		return false
	}
	if err != nil {
		if ctx.Err() == nil {
			f.a.logger.Warn("reading an async job's record", zap.String("id", f.rec.ID), zap.Error(err))
		}
		return true // keep the last state; the next period tries again
	}
	if rec.Status == statusRunning && rec.lostAt().Before(time.Now()) {
		// As the monitor does: the first instance to see a job not
		// refreshed for three periods ends it (state.go).
		var declared bool
		rec, declared, err = declareLost(ctx, f.a.storage, rec.ID)
		if errors.Is(err, errGone) {
			return false
		}
		if err != nil {
			return true
		}
		if declared {
			f.a.emitRecord(EventJobFailed, rec, rec.Status, rec.Reason)
		}
	}
	f.rec = rec
	return true
}

// serveEvents answers the monitor's event stream.
func (a *Config) serveEvents(w http.ResponseWriter, r *http.Request, view jobRecord, local *job) error {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	// A buffering proxy in front (nginx) would hold the events back.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(s string) error {
		if _, err := io.WriteString(w, s); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := send(": job " + view.ID + "\n\n"); err != nil {
		return nil
	}
	f := &jobFollower{a: a, rec: view, local: local}
	f.follow(r.Context(), func(rec jobRecord) error {
		b, err := json.Marshal(rec.public(time.Now()))
		if err != nil {
			return err
		}
		return send("data: " + string(b) + "\n\n")
	}, func() error {
		return send(": keep-alive\n\n")
	})
	return nil // an error here is the client gone: nothing to answer
}

// waitOnMonitor sends 102s with the latest Progress to a client that asked
// for them on the status document, until the job ends; then the caller
// answers as the monitor does. gone is true when the job was deleted
// meanwhile.
func (a *Config) waitOnMonitor(w http.ResponseWriter, r *http.Request, view jobRecord, local *job) (final jobRecord, gone bool) {
	budget := interimBudget{max: a.progress.max}
	f := &jobFollower{a: a, rec: view, local: local}
	send := func() error {
		if budget.take() {
			writeInterim(w, r, interimFields("", f.rec.Progress))
		}
		return nil
	}
	first := true
	_, gone = f.follow(r.Context(), func(rec jobRecord) error {
		if first || rec.Status == statusRunning {
			first = false
			return send()
		}
		return nil
	}, send)
	return f.rec, gone
}
