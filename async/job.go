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
	// recorded: the running record is stored; from then on the record
	// is changed only under the job's lock (state.go).
	recorded bool
	// settled: this instance knows the record is terminal or gone (it
	// ended it, or a refresh found it ended elsewhere); nothing more is
	// written.
	settled bool

	// quit is the registry's, closed after `caddy stop`: the job stops
	// retrying to record its outcome.
	quit <-chan struct{}
	// stopTimeout releases the timeout's timer.
	stopTimeout context.CancelFunc

	live jobLive // progress.go: the latest Progress, for followers
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
// is done within wait, else 202 Accepted (RFC 7240 §4.1), or, for a client
// waiting with `Prefer: processing` (withInterims), 102s and the job's
// response when it ends (progress.go).
func (a *Config) submit(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, wait time.Duration, withInterims bool) error {
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
	j.rec.onInterim = j.live.noteInterim // progress.go

	// A request the limits would refuse is refused before a byte of its
	// body is read; the slot itself is taken once the body is in, so that
	// an upload in progress holds none (upload.go).
	if why := a.atLimit(r.Context()); why != "" {
		return a.refuseAtLimit(w, r, why, true)
	}
	body, err := a.readBody(w, r)
	if err != nil {
		return err
	}
	// The job's context is made here, with the job in the registry from
	// admit on, where a shutdown may cancel it. The handlers' context
	// ends at the timeout, with a cause that names it; j.cancel's causes
	// reach it too.
	var base context.Context
	base, j.cancel = context.WithCancelCause(context.WithoutCancel(r.Context()))
	j.ctx, j.stopTimeout = context.WithTimeoutCause(base, a.timeout, timeoutError{a.timeout})
	j.created = time.Now()
	if why := a.admit(r.Context(), j); why != "" {
		body.remove()
		j.cancel(nil)
		j.stopTimeout()
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
	// A new id: no other instance can know it yet, so no lock.
	rec := j.record(statusRunning, "", time.Now())
	if err := storeJobRecord(context.Background(), a.storage, rec); err != nil {
		// The client gets no job id: a 500 says the request failed, so
		// the job must not go on doing what it was asked.
		a.logger.Error("storing a new async job", zap.String("id", j.id), zap.Error(err))
		j.cancel(storageError{err})
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: storing the job: %w", err))
	}
	j.mu.Lock()
	j.recorded = true
	j.mu.Unlock()
	j.emit(EventJobStarted, statusRunning, "") // events.go
	if r.Context().Err() != nil {
		return nil // the client left; the job goes on
	}
	if withInterims {
		return j.answerWithInterims(w, r) // progress.go
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
	defer j.stopTimeout()
	defer j.cancel(nil) // releases the context once everything is done

	stopRefresh := make(chan struct{})
	refreshDone := make(chan struct{})
	go j.refreshLoop(stopRefresh, refreshDone)

	j.callNext(next, r)
	// The body goes before the outcome is recorded: a client that sees
	// the job ended finds no file of it left.
	body.remove()
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

// finish records the outcome of a detached job, unless its record was
// ended elsewhere or deleted meanwhile.
func (j *job) finish() {
	j.mu.Lock()
	settled, recorded := j.settled, j.recorded
	j.mu.Unlock()
	if settled || !recorded {
		// Gone or ended elsewhere (the instance that did it counted
		// it), or never stored (the client got 500).
		return
	}
	status, reason := j.outcome()
	if status == statusSucceeded {
		status, reason = j.commitResult()
	} else {
		status, reason = j.record1(status, reason)
	}
	if status == "" {
		return // lost to another transition
	}
	asyncOutcomes.WithLabelValues(status).Inc()
	if c := j.a.logger.Check(zap.DebugLevel, "async job done"); c != nil {
		c.Write(zap.String("id", j.id), zap.String("status", status), zap.String("reason", reason))
	}
	j.emitEnded(status, reason) // events.go
}

// record1 records a terminal state without a result, retrying while the
// storage fails. It returns the state recorded, or "" when the job was
// gone or ended elsewhere.
func (j *job) record1(status, reason string) (string, string) {
	err := j.retry(func(ctx context.Context) error { return j.settle(ctx, status, reason, 0) })
	if lost(err) {
		return "", err.Error()
	}
	return status, reason
}

// commitResult stores the result, then the record that says succeeded,
// so that no reader sees a success without its result. The result is
// written before the job's lock is taken, under a key that no instance
// serves before the record says succeeded: the lock is held only to load
// the record and write the new one, not for the result's write, which
// may be large. Its bytes are reserved in max_stored before and given back
// if the job does not succeed. If, under the lock, the record is gone (a
// DELETE) or already ended (declared lost, timed out), the result is
// deleted again and nothing else is written: a job deleted with 204 never
// serves a result.
func (j *job) commitResult() (status, reason string) {
	storage := j.a.storage
	ctx := context.Background()
	res, err := j.resultToStore()
	if err != nil {
		return j.record1(statusFailed, "encoding the result: "+err.Error())
	}
	size := res.size()
	ok, err := reserveStored(ctx, storage, size, j.a.MaxStored)
	switch {
	case err != nil:
		return j.record1(statusFailed, storageError{err}.Error())
	case !ok:
		return j.record1(statusFailed, "max_stored reached")
	}
	err = storeResult(ctx, storage, j.id, res)
	if err == nil {
		err = j.settle(ctx, statusSucceeded, "", size)
		if err == nil {
			j.setSettled()
			return statusSucceeded, ""
		}
		// Not succeeded: the result goes (the whole folder if the job
		// is gone). storeResult removed what it wrote if it failed.
		key := jobResultKey(j.id)
		if errors.Is(err, errGone) {
			key = jobKey(j.id)
		} else if derr := storage.Delete(ctx, jobBodyKey(j.id)); derr != nil {
			j.a.logger.Error("deleting an async job's result", zap.String("id", j.id), zap.Error(derr))
		}
		if derr := storage.Delete(ctx, key); derr != nil {
			j.a.logger.Error("deleting an async job's result", zap.String("id", j.id), zap.Error(derr))
		}
	}
	// Its bytes are given back.
	if rerr := releaseStored(ctx, storage, size); rerr != nil {
		j.a.logger.Error("giving back an async job's max_stored bytes", zap.String("id", j.id), zap.Error(rerr))
	}
	if lost(err) {
		j.setSettled()
		return "", err.Error()
	}
	j.a.logger.Error("storing an async job's result", zap.String("id", j.id), zap.Error(err))
	return j.record1(statusFailed, storageError{err}.Error())
}

// retry runs a transition until it is decided: stored, or lost to
// another one. While the storage fails it tries again every refresh
// period, until `caddy stop` ends the registry's generation.
func (j *job) retry(transition func(ctx context.Context) error) error {
	for {
		err := transition(context.Background())
		if err == nil || lost(err) {
			j.setSettled()
			return err
		}
		j.a.logger.Error("recording an async job's end; retrying", zap.String("id", j.id), zap.Error(err))
		t := time.NewTimer(j.a.refresh)
		select {
		case <-t.C:
		case <-j.quit:
			t.Stop()
			return err
		}
	}
}

func (j *job) setSettled() {
	j.mu.Lock()
	j.settled = true
	j.mu.Unlock()
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
	case cause != nil:
		// A timeout or a storage failure, whose text is the reason.
		return statusFailed, cause.Error()
	case j.rec.status == 0 && j.nextErr != nil:
		code := http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(j.nextErr, &he) && he.StatusCode != 0 {
			code = he.StatusCode
		}
		return statusFailed, fmt.Sprintf("%s %d %s", reasonHandlerError, code, http.StatusText(code))
	}
	return statusSucceeded, ""
}

// record is the job's record in the given state.
func (j *job) record(status, reason string, updated time.Time) jobRecord {
	return jobRecord{
		ID: j.id, Status: status, Reason: reason,
		Created: j.created, Updated: updated,
		Refresh: j.a.refresh, Keep: j.a.keep, Auth: j.auth,
		Method: j.method, Path: j.path,
		Progress: j.latestProgress(), // progress.go
	}
}

// refreshLoop keeps the job's record while its handlers run: every refresh
// period it writes that the job still runs (so that other instances know
// it is alive), and learns whether the record was deleted or ended
// elsewhere, which stops the handlers. A timeout or a storage failure is
// recorded at once, not when the handlers return, and retried every
// period while the storage fails.
func (j *job) refreshLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(j.a.refresh)
	defer t.Stop()
	ended := j.ctx.Done()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		case <-ended:
			ended = nil // handled now, then at each tick
		}
		j.mu.Lock()
		skip := !j.detached || !j.recorded || j.settled
		j.mu.Unlock()
		if skip {
			continue
		}
		ctx := context.Background()
		cause := context.Cause(j.ctx)
		var (
			ste storageError
			toe timeoutError
		)
		if errors.As(cause, &ste) || errors.As(cause, &toe) {
			if err := j.settle(ctx, statusFailed, cause.Error(), 0); err == nil || lost(err) {
				if err == nil {
					j.emitEnded(statusFailed, cause.Error()) // events.go
				}
				j.setSettled()
			} else {
				j.a.logger.Error("recording an async job's failure; retrying", zap.String("id", j.id), zap.Error(err))
			}
			continue
		}
		err := j.refreshRecord(ctx)
		switch {
		case err == nil:
		case errors.Is(err, errGone):
			j.stopHandlers(errDeleted)
		case errors.Is(err, errSettled):
			j.stopHandlers(errLost)
		default:
			j.a.logger.Error("refreshing an async job", zap.String("id", j.id), zap.Error(err))
			j.cancel(storageError{err})
		}
	}
}

// stopHandlers cancels a job whose record was deleted or ended by another
// transition: nothing more of it is stored.
func (j *job) stopHandlers(cause error) {
	j.setSettled()
	j.cancel(cause)
}

// detachedRequest is the request the job's handlers see. It shares nothing
// mutable with r, whose access log still reads r's variable table and
// replacer after the 202 (a write to a map another goroutine reads is a
// fatal error, not a recoverable one): the
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
	dir, err := bodyDir()
	if err != nil {
		return nil, caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: body folder: %w", err))
	}
	f, err := os.CreateTemp(dir, "body-*")
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
