package async

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/prefer"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// job is one request running detached from its client.
type job struct {
	id      string
	method  string
	path    string
	created time.Time
	auth    string // bindingHash of the submitter, or "" (access.go)
	a       *Config
	cancel  context.CancelCauseFunc
	ctx     context.Context

	rec recorder // written by the job's handlers only, until done is closed

	// done is closed when the handlers have returned; nextErr and
	// panicked are set before.
	done     chan struct{}
	nextErr  error
	panicked bool
	// ended is closed when nothing of the job runs any more: its record
	// and result are stored (or deleted) and its body file is removed.
	ended chan struct{}

	// mu guards the fields below, the hand-over between the submitter's
	// goroutine and the job's.
	mu sync.Mutex
	// detached: the submitter gave up waiting and answered 202 (or left);
	// the job's outcome goes to storage.
	detached bool
	// inline: the handlers were done before the submitter gave up; the
	// submitter answers with the recorded response and nothing is stored.
	inline bool
	// deleted: a DELETE asked for the job to go; nothing is stored after.
	deleted bool

	// storeMu serialises the writes of the job's record, so that a late
	// refresh never overwrites the final state; final is guarded by it.
	storeMu sync.Mutex
	final   bool
	stored  int64 // bytes of the result this job stored
}

// jobIDBytes is 144 bits from crypto/rand: more than the 128 the issue
// asks for, and a multiple of 3 bytes, so the base64url form has no padding.
const jobIDBytes = 18

var jobIDLen = base64.RawURLEncoding.EncodedLen(jobIDBytes)

func newJobID() string {
	b := make([]byte, jobIDBytes)
	_, _ = rand.Read(b) // never fails since Go 1.24: it crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// validJobID accepts exactly what newJobID makes, so that nothing else a
// client sends reaches a storage key.
func validJobID(id string) bool {
	if len(id) != jobIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// memBodyLimit is how much of a request body stays in memory; the rest of
// a larger one goes to a temporary file, so that max_jobs jobs waiting with
// max_body bodies do not take max_jobs × max_body of memory.
const memBodyLimit = 1 << 20

// submit turns the request into a job and answers it: directly if the job
// is done within wait, else 202 Accepted (RFC 7240 §4.1).
func (a *Config) submit(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, wait time.Duration) error {
	j := &job{
		id:     newJobID(),
		method: r.Method,
		path:   r.URL.Path,
		a:      a,
		done:   make(chan struct{}),
		ended:  make(chan struct{}),
	}
	j.auth = a.bindingHash(j.id, r)
	j.rec.max = a.MaxResult
	j.rec.head = r.Method == http.MethodHead
	j.rec.base = targetOf(r)
	// Made here, not lazily: reverse_proxy calls Header from its
	// transport's goroutine for an upstream's 1xx, possibly first.
	j.rec.header = make(http.Header)

	// A request the limits would refuse is refused before a byte of its
	// body is read; the slot itself is taken once the body is in, so that
	// an upload in progress holds none (upload.go).
	if full, why := registry.atLimit(a.MaxJobs, a.MaxStored); full {
		return a.refuseAtLimit(w, r, why, true)
	}
	body, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	// The job's context is made here, with the job in the registry from
	// reserve on, where a shutdown may cancel it.
	j.ctx, j.cancel = context.WithCancelCause(context.WithoutCancel(r.Context()))
	j.created = time.Now()
	if ok, why := registry.reserve(j, a.MaxJobs, a.MaxStored); !ok {
		body.remove()
		j.cancel(nil)
		return a.refuseAtLimit(w, r, why, false)
	}

	jr := detachedRequest(j.ctx, r, body, &j.rec)
	j.rec.onOverflow = func() { j.cancel(errResultTooLarge) }
	go j.run(next, jr, body)

	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-j.done:
	case <-timer.C:
	case <-r.Context().Done():
	}
	j.mu.Lock()
	select {
	case <-j.done:
		j.inline = true
	default:
		j.detached = true
	}
	j.mu.Unlock()
	if j.inline {
		return j.answerInline(w, r)
	}

	// Detached: the record must be in storage before the client can ask
	// any instance about it.
	rec := j.record(statusRunning, "", time.Now())
	if err := j.storeRecord(rec); err != nil {
		// The client gets no job id: a 500 says the request failed, so
		// the job must not go on doing what it was asked.
		a.logger.Error("storing a new async job", zap.String("id", j.id), zap.Error(err))
		j.cancel(fmt.Errorf("storage: %w", err))
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: storing the job: %w", err))
	}
	if r.Context().Err() != nil {
		return nil // the client left; the job goes on
	}
	h := w.Header()
	h.Set("Location", a.monitorSl+j.id)
	h.Set("Preference-Applied", "respond-async")
	h.Set("Retry-After", retryAfter(0))
	h.Add("Vary", "Prefer")
	h.Set("Cache-Control", "no-store")
	return writeJSON(w, r, http.StatusAccepted, rec.public(time.Now()))
}

// answerInline writes the response the job's handlers recorded, or returns
// their error so that Caddy's error handling answers as it would have.
func (j *job) answerInline(w http.ResponseWriter, r *http.Request) error {
	<-j.ended // the job goroutine has let go of everything
	asyncOutcomes.WithLabelValues("direct").Inc()
	switch {
	case j.panicked:
		return caddyhttp.Error(http.StatusInternalServerError, errors.New("async: a handler panicked"))
	case j.rec.overflow:
		return caddyhttp.Error(http.StatusInternalServerError, errResultTooLarge)
	case j.rec.status == 0 && j.nextErr != nil:
		return j.nextErr
	}
	defer j.rec.remove()
	res := j.rec.resultHead()
	body, err := j.rec.body()
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: result file: %w", err))
	}
	h := w.Header()
	maps.Copy(h, res.Header)
	// The response depends on Prefer: without it the client would have
	// had the same; with a slower backend, a 202 (RFC 9110 §12.5.5).
	h.Add("Vary", "Prefer")
	if r.Method == http.MethodHead {
		// A HEAD response announces the length a GET would have had
		// (RFC 9110 §9.3.2, §8.6).
		if res.HeadLength >= 0 {
			h.Set("Content-Length", strconv.FormatInt(res.HeadLength, 10))
		}
		w.WriteHeader(res.Status)
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(res.Size, 10))
	w.WriteHeader(res.Status)
	_, err = io.Copy(w, body)
	return err
}

// errResultTooLarge fails a job whose response passes max_result.
var errResultTooLarge = errors.New("result larger than max_result")

// run is the job's goroutine.
func (j *job) run(next caddyhttp.Handler, r *http.Request, body *bufferedBody) {
	defer close(j.ended)
	defer registry.remove(j)
	defer body.remove()
	defer j.cancel(nil) // releases the context once everything is done

	stopRefresh := make(chan struct{})
	refreshDone := make(chan struct{})
	go j.refreshLoop(stopRefresh, refreshDone)

	j.callNext(next, r)
	j.mu.Lock()
	if !j.detached {
		j.inline = true
	}
	inline := j.inline
	j.mu.Unlock()
	close(j.done)
	close(stopRefresh)
	<-refreshDone
	if inline {
		return // answerInline serves the recorded body, then removes it
	}
	defer j.rec.remove()
	j.finish()
}

// callNext runs the rest of the route. A panic must not reach the runtime:
// on this goroutine net/http's recovery does not apply and would take the
// whole process down.
func (j *job) callNext(next caddyhttp.Handler, r *http.Request) {
	defer func() {
		if rec := recover(); rec != nil {
			j.panicked = true
			j.a.logger.Error("panic in a handler of an async job",
				zap.String("id", j.id), zap.Any("panic", rec), zap.ByteString("stack", debug.Stack()))
		}
	}()
	j.nextErr = next.ServeHTTP(&j.rec, r)
}

// finish records the outcome of a detached job: the result before the
// record that says it succeeded, so that no reader sees a success without
// its result.
func (j *job) finish() {
	j.mu.Lock()
	deleted := j.deleted
	j.mu.Unlock()
	storage := j.a.storage
	ctx := context.Background()
	if deleted {
		j.markFinal()
		if err := storage.Delete(ctx, jobKey(j.id)); err != nil {
			j.a.logger.Error("deleting an async job", zap.String("id", j.id), zap.Error(err))
		}
		asyncOutcomes.WithLabelValues("deleted").Inc()
		return
	}
	status, reason := j.outcome()
	var size int64
	if status == statusSucceeded {
		res, err := j.resultToStore()
		switch {
		case err != nil:
			status, reason = statusFailed, "encoding the result: "+err.Error()
		case !registry.addStored(res.size(), j.a.MaxStored):
			status, reason = statusFailed, "max_stored reached"
		default:
			if err := storeResult(ctx, storage, j.id, res); err != nil {
				registry.subStored(res.size())
				j.a.logger.Error("storing an async job's result", zap.String("id", j.id), zap.Error(err))
				status, reason = statusFailed, "storage: "+err.Error()
			} else {
				size = res.size()
			}
		}
	}
	now := time.Now()
	rec := j.record(status, reason, now)
	rec.Ended, rec.ResultSize = now, size
	j.storeMu.Lock()
	j.final, j.stored = true, size
	err := storeJobRecord(ctx, storage, rec)
	j.storeMu.Unlock()
	if err != nil {
		j.a.logger.Error("storing an async job's outcome", zap.String("id", j.id), zap.String("status", status), zap.Error(err))
	}
	asyncOutcomes.WithLabelValues(status).Inc()
	if c := j.a.logger.Check(zap.DebugLevel, "async job done"); c != nil {
		c.Write(zap.String("id", j.id), zap.String("status", status), zap.String("reason", reason))
	}
}

// outcome classifies a finished job.
func (j *job) outcome() (status, reason string) {
	cause := context.Cause(j.ctx)
	switch {
	case errors.Is(cause, errShutdown):
		return statusCanceled, errShutdown.Error()
	case j.rec.overflow:
		return statusFailed, fmt.Sprintf("%v (%d bytes)", errResultTooLarge, j.a.MaxResult)
	case j.rec.writeErr != nil:
		return statusFailed, j.rec.writeErr.Error()
	case j.panicked:
		return statusFailed, "a handler panicked"
	case cause != nil && !errors.Is(cause, errDeleted):
		return statusFailed, cause.Error()
	case j.rec.status == 0 && j.nextErr != nil:
		code := http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(j.nextErr, &he) && he.StatusCode != 0 {
			code = he.StatusCode
		}
		return statusFailed, fmt.Sprintf("handler error: %d %s", code, http.StatusText(code))
	}
	return statusSucceeded, ""
}

// markFinal stops every later write of the job's record, and returns how
// many result bytes the job stored.
func (j *job) markFinal() int64 {
	j.storeMu.Lock()
	defer j.storeMu.Unlock()
	j.final = true
	return j.stored
}

// record is the job's record in the given state.
func (j *job) record(status, reason string, updated time.Time) jobRecord {
	return jobRecord{
		ID: j.id, Status: status, Reason: reason,
		Created: j.created, Updated: updated,
		Refresh: j.a.refresh, Keep: j.a.keep, Auth: j.auth,
		Method: j.method, Path: j.path,
	}
}

// storeRecord writes a running record unless the final one is written.
func (j *job) storeRecord(rec jobRecord) error {
	j.storeMu.Lock()
	defer j.storeMu.Unlock()
	if j.final {
		return nil
	}
	return storeJobRecord(context.Background(), j.a.storage, rec)
}

// refreshLoop writes the job's `updated` every refresh period while it is
// detached, so that other instances know it is alive, and picks up a DELETE
// made on another instance (its cancel marker).
func (j *job) refreshLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(j.a.refresh)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		j.mu.Lock()
		skip := !j.detached || j.deleted
		j.mu.Unlock()
		if skip {
			continue
		}
		ctx := context.Background()
		if j.a.storage.Exists(ctx, jobCancelKey(j.id)) {
			j.mu.Lock()
			j.deleted = true
			j.mu.Unlock()
			j.cancel(errDeleted)
			continue
		}
		if err := j.storeRecord(j.record(statusRunning, "", time.Now())); err != nil {
			j.a.logger.Warn("refreshing an async job", zap.String("id", j.id), zap.Error(err))
		}
	}
}

// deleteLocal cancels a job running here and waits (a bounded time) for its
// handlers to return; the job then deletes what it stored.
func (j *job) deleteLocal() {
	j.mu.Lock()
	j.deleted = true
	j.mu.Unlock()
	j.cancel(errDeleted)
	select {
	case <-j.ended:
	case <-time.After(5 * time.Second):
		// A handler that ignores its context: the job deletes its
		// records itself when it ends.
	}
}

// detachedRequest is the request the job's handlers see. It shares nothing
// mutable with r, whose access log still reads r's variable table and
// replacer after the 202 (the hazard of the SetVar race, issue 8): the
// header, URL and trailer are cloned, the variable table, route groups and
// extra log fields are new copies, and the replacer is a new one, made as
// Caddy's server makes one for each request (caddyhttp.PrepareRequest),
// bound to this request and to the job's recorder, so that response
// placeholders ({http.response.header.*}) read what the job's handlers
// wrote. Its context keeps r's values but not r's cancellation.
//
// Placeholders that a `map` before processing added to r's replacer are not
// in the job's: a replacer cannot be copied, and reading r's from the job's
// goroutine would race with r's access log.
func detachedRequest(ctx context.Context, r *http.Request, body *bufferedBody, rec *recorder) *http.Request {
	origVars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	groups, _ := r.Context().Value(routeGroupCtxKey).(map[string]struct{})
	server, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	orig, hasOrig := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
	// The server's idle-timeout wrappers act on the client's connection,
	// which the job does not own.
	ctx = context.WithValue(ctx, idleTimeoutsCtxKey, nil)

	jr := caddyhttp.PrepareRequest(r.Clone(ctx), caddy.NewReplacer(), rec, server)
	// PrepareRequest made a new variable table, route groups and original
	// request from jr; the job keeps r's, as the rest of r's route would
	// have seen them (start_time included).
	vars, _ := jr.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	maps.Copy(vars, origVars)
	if g, ok := jr.Context().Value(routeGroupCtxKey).(map[string]struct{}); ok {
		maps.Copy(g, groups)
	}
	if hasOrig {
		// In place, as the replacer is bound to this *http.Request.
		*jr = *jr.WithContext(context.WithValue(jr.Context(), caddyhttp.OriginalRequestCtxKey, orig))
	}

	// The body is complete and known: reverse_proxy can send it with a
	// Content-Length and replay it on a retry (GetBody).
	jr.Body = body.reader()
	jr.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil }
	jr.ContentLength = body.size
	jr.TransferEncoding = nil
	jr.Header.Del("Expect")
	if jr.Header.Get("Content-Length") != "" || body.size > 0 {
		jr.Header.Set("Content-Length", strconv.FormatInt(body.size, 10))
	}
	// This module applied respond-async and wait; the handlers after it
	// answer a request that waits for them, and get the preferences it did
	// not apply (return=minimal, handling=lenient and the like).
	if rest := prefer.Without(r.Header["Prefer"], "respond-async", "wait"); rest != nil {
		jr.Header["Prefer"] = rest
	} else {
		jr.Header.Del("Prefer")
	}
	return jr
}

// Caddy's unexported context keys, of type caddy.CtxKey (a string type):
// equal values are the same key.
var (
	routeGroupCtxKey   = caddy.CtxKey("route_group")
	idleTimeoutsCtxKey = caddy.CtxKey("idle_timeouts")
)

// bufferedBody is a request body read in full: in memory when small, else
// in a temporary file removed when the job ends.
type bufferedBody struct {
	mem  []byte
	file *os.File
	size int64
}

// bufferBody reads r's body up to limit bytes; beyond it, 413.
func bufferBody(r *http.Request, limit int64) (*bufferedBody, error) {
	b := new(bufferedBody)
	if r.Body == nil || r.Body == http.NoBody {
		return b, nil
	}
	if r.ContentLength > limit {
		return nil, caddyhttp.Error(http.StatusRequestEntityTooLarge, fmt.Errorf("async: body of %d bytes passes max_body", r.ContentLength))
	}
	lr := io.LimitReader(r.Body, limit+1)
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, lr, memBodyLimit+1)
	if err != nil && err != io.EOF {
		return nil, caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("async: reading the body: %w", err))
	}
	if n <= memBodyLimit {
		b.mem, b.size = buf.Bytes(), n
		return b, nil
	}
	f, err := os.CreateTemp("", "caddy-processing-body-*")
	if err != nil {
		return nil, caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: body file: %w", err))
	}
	b.file = f
	total, err := io.Copy(f, io.MultiReader(&buf, lr))
	if err != nil {
		b.remove()
		return nil, caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("async: reading the body: %w", err))
	}
	if total > limit {
		b.remove()
		return nil, caddyhttp.Error(http.StatusRequestEntityTooLarge, fmt.Errorf("async: body passes max_body (%d bytes)", limit))
	}
	b.size = total
	return b, nil
}

// reader is a new reader over the whole body. Closing it does nothing: the
// file is the job's, removed by remove.
func (b *bufferedBody) reader() io.ReadCloser {
	if b.file != nil {
		return io.NopCloser(io.NewSectionReader(b.file, 0, b.size))
	}
	if b.size == 0 {
		return http.NoBody
	}
	return io.NopCloser(bytes.NewReader(b.mem))
}

func (b *bufferedBody) remove() {
	if b.file != nil {
		b.file.Close()
		os.Remove(b.file.Name())
	}
}

// retryAfter is the Retry-After for a job running for elapsed: a quarter of
// the time it has run, from 1 to 30 seconds, so that pollers of a long job
// back off.
func retryAfter(elapsed time.Duration) string {
	s := int64(elapsed / 4 / time.Second)
	return strconv.FormatInt(min(max(s, 1), 30), 10)
}
