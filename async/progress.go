package async

// Progress, end to end (draft-wright-http-progress): a request carrying
// `Prefer: processing` that is still running at `wait` becomes a job, as
// with respond-async, but its client keeps waiting. It gets a 102 carrying
// `Location: <monitor>/<id>` at that moment, 102s every interval of the
// processing handler after it, each with the latest `Progress` a handler
// reported, and the job's recorded response when the job ends. If the
// connection breaks, the job runs on and its result stays at that Location
// for `keep`, under the same binding, limits and statuses as any job.
//
// This file holds the job's live progress, the 102s async mode writes
// itself, and the waiting client's side; events.go emits the job's life as
// Caddy events, sse.go follows a job for the monitor (event stream and
// `Prefer: processing` on the status document).

import (
	"errors"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"github.com/c055b0d7/caddy-processing/internal/progress"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// defaultInterimInterval is the time between two 102s and between two
// keep-alive comments of an event stream when the processing handler did
// not say (SetInterim): the handler's own default, RFC 2518 §10.1's
// 20 seconds.
const defaultInterimInterval = 20 * time.Second

// progressConfig is what async mode takes from the processing handler
// around it, and the events app; Config holds one.
type progressConfig struct {
	// interval is the time between two 102s of a waiting client and
	// between two keep-alive comments of an event stream: the processing
	// handler's interval.
	interval time.Duration
	// max is the most 102s one request gets, the handler's max; 0 is no
	// limit.
	max int
	// events emits the job's life; nil without an events app.
	events *eventEmitter
}

// SetInterim gives async mode the processing handler's interval and max,
// which its own 102s and event streams keep to. The handler calls it in its
// Provision, before Config.Provision.
func (a *Config) SetInterim(interval time.Duration, max int) {
	a.progress.interval, a.progress.max = interval, max
}

func (a *Config) interimInterval() time.Duration {
	if a.progress.interval > 0 {
		return a.progress.interval
	}
	return defaultInterimInterval
}

// canSendInterim: RFC 9110 §15.2 forbids any 1xx to an HTTP/1.0 client, and
// Go's server would send one anyway.
func canSendInterim(r *http.Request) bool {
	return r.ProtoAtLeast(1, 1)
}

// jobLive is what a running job reports before it ends: the latest valid
// Progress a handler sent on a 1xx, and a channel closed at each change, so
// that those who follow the job (a waiting client, an event stream) wake
// without polling.
type jobLive struct {
	// mu guards the fields below. The recorder sets them from whatever
	// goroutine writes a 1xx (reverse_proxy's transport goroutine for an
	// upstream's 102), the followers read them.
	mu       sync.Mutex
	progress string
	changed  chan struct{} // closed and replaced at every change; made lazily
}

// noteInterim keeps the Progress of a 1xx the job's handlers wrote, if the
// draft's grammar allows it (internal/progress); any other value is
// ignored. h is the recorder's header map as the 1xx carries it, read on
// the goroutine that wrote it.
func (l *jobLive) noteInterim(h http.Header) {
	v, ok := progress.Of(h[progress.FieldName])
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v == l.progress {
		return
	}
	l.progress = v
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// get returns the latest progress and a channel closed at the next change.
func (l *jobLive) get() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.progress, l.changed
}

// latestProgress is the job's latest valid Progress, "" before any.
func (j *job) latestProgress() string {
	p, _ := j.live.get()
	return p
}

// writeInterim writes a 102 that carries fields and nothing else. The
// response's own header map holds whatever Caddy's server and the handlers
// before this one set (Server, Alt-Svc, a `header` directive's fields), and
// Go's servers put the whole live map on a 1xx; the fields are moved out for
// the 102 and back after it. The 102 goes straight to net/http's writer,
// past Caddy's access-log recorder and metrics wrapper, which would take it
// for the final status (see the core's sendInterimLocked). On HTTP/2, a
// Transfer-Encoding in the map makes x/net hand its frame writer a clone
// (http2/server.go, writeHeader for 1xx), so the map is ours again when
// WriteHeader returns even if the stream was reset meanwhile.
func writeInterim(w http.ResponseWriter, r *http.Request, fields http.Header) {
	// The map of the writer the 102 goes to: w may be the writer of an
	// enclosing processing handler, whose Header is a map of its own.
	inner := caddyutil.Innermost(w)
	h := inner.Header()
	saved := maps.Clone(h)
	clear(h)
	maps.Copy(h, fields)
	if r.ProtoMajor == 2 {
		h["Transfer-Encoding"] = []string{"chunked"}
	}
	inner.WriteHeader(http.StatusProcessing)
	clear(h)
	maps.Copy(h, saved)
}

// interimFields are the fields of one of the module's async 102s: the
// Location of the status document on the first, the latest Progress on
// each.
func interimFields(location, progressValue string) http.Header {
	h := make(http.Header, 2)
	if location != "" {
		h["Location"] = []string{location}
	}
	if progressValue != "" {
		h[progress.FieldName] = []string{progressValue}
	}
	return h
}

// interimBudget counts a request's 102s against the handler's max.
type interimBudget struct {
	max, sent int
}

func (b *interimBudget) take() bool {
	if b.max > 0 && b.sent >= b.max {
		return false
	}
	b.sent++
	return true
}

// answerWithInterims serves the client of a job that went detached while
// it waits with `Prefer: processing`: the 102 with the Location at once,
// then one every interval and one at each new Progress (the draft: "and
// every time there is an update to the operation progress"), each with the
// latest Progress, then the job's recorded response (or its failure). A
// client that leaves ends this; the job runs on. All of it runs on the
// request's goroutine: nothing else writes to w.
func (j *job) answerWithInterims(w http.ResponseWriter, r *http.Request) error {
	a := j.a
	location := a.monitorSl + j.id
	budget := interimBudget{max: a.progress.max}
	p, progressed := j.live.get()
	if budget.take() {
		writeInterim(w, r, interimFields(location, p))
	}
	tick := time.NewTicker(a.interimInterval())
	defer tick.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return nil // the job goes on; its result waits at location
		case <-tick.C:
		case <-progressed:
		case <-j.ended:
			return j.answerEnded(w, r)
		}
		p, progressed = j.live.get()
		if budget.take() {
			writeInterim(w, r, interimFields("", p))
		}
	}
}

// answerEnded answers the waiting client with the job's outcome as stored:
// the recorded response as the monitor's result serves it, or, for a job
// that did not succeed, what the client would have had without async
// (a handler's error goes to Caddy's error handling).
func (j *job) answerEnded(w http.ResponseWriter, r *http.Request) error {
	a := j.a
	ctx := r.Context()
	rec, err := loadJobRecord(ctx, a.storage, j.id)
	switch {
	case errors.Is(err, errNoRecord):
		return notFound(w, r) // deleted meanwhile
	case err != nil:
		a.logger.Error("loading an async job's record", zap.String("id", j.id), zap.Error(err))
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Add("Vary", "Prefer")
	if rec.Status == statusSucceeded {
		return a.serveResult(ctx, w, r, rec)
	}
	switch {
	case rec.Status == statusCanceled:
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("async: job canceled: "+rec.Reason))
	case strings.HasPrefix(rec.Reason, reasonHandlerError) && j.nextErr != nil:
		// The handlers' own error, as outcome classified it.
		return j.nextErr
	}
	return caddyhttp.Error(http.StatusInternalServerError, errors.New("async: job failed: "+rec.Reason))
}
