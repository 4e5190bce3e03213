package processing

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/http/httpguts"
)

// ServeHTTP sends 102 responses while next works on the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	if h.Async != nil {
		if handled, err := h.Async.serve(w, r, next); handled {
			return err
		}
	}
	// RFC 9110 §15.2: a server must not send a 1xx to an HTTP/1.0 client,
	// and Go's server would send one anyway.
	if !r.ProtoAtLeast(1, 1) {
		return next.ServeHTTP(w, r)
	}
	prefer := prefersProcessing(r.Header["Prefer"])
	if h.OptIn && !prefer {
		return next.ServeHTTP(w, r)
	}

	iw := writerPool.Get().(*interimWriter)
	iw.begin(h, w, r, prefer)
	returned := false
	defer func() {
		iw.stop()
		// A panic after 102s and before the final status: the client was
		// told the request is in progress, so the panic becomes an error
		// that Caddy's error handling (handle_errors) answers. Any other
		// panic goes on to net/http untouched, keeping its stack;
		// http.ErrAbortHandler asks net/http to abort the response.
		if !returned && iw.interim && !iw.committed {
			if rec := recover(); rec == http.ErrAbortHandler {
				iw.finish(r, err, true)
				panic(rec)
			} else if rec != nil { // nil: runtime.Goexit, not a panic
				h.logger.Error("panic in a handler after 102 Processing",
					zap.Any("panic", rec), zap.ByteString("stack", debug.Stack()))
				err = caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("panic: %v", rec))
				returned = true
			}
		}
		iw.finish(r, err, !returned)
		writerPool.Put(iw)
	}()
	err = next.ServeHTTP(iw, r)
	returned = true
	return err
}

// phase is where one request's response stands.
type phase uint8

const (
	// waiting: the final status is not written yet; 102s may be sent.
	waiting phase = iota
	// final: the final status (200 or more, or 101) is written or the
	// connection hijacked; nothing more may be sent from a timer.
	final
	// done: ServeHTTP is returning; nothing but the request's own goroutine
	// may touch the response again (HTTP/2 panics on a late WriteHeader).
	done
)

// writerPool recycles interimWriters with their timer and header map, so
// that a request that finishes before its first 102 allocates nothing here.
// A writer goes back into the pool only after stop has stopped its timer and
// waited out any running tick, so a late tick can never reach the response
// of the request that uses the writer next.
var writerPool = sync.Pool{New: func() any {
	w := new(interimWriter)
	w.timer = time.AfterFunc(time.Hour, w.tick)
	w.timer.Stop()
	return w
}}

// interimWriter is the ResponseWriter the next handler sees. It keeps the
// next handler's header fields in a map of its own until the final status,
// because Go's servers put the whole live header map on every 1xx: the real
// map must hold nothing but the 102's own fields when the timer sends one.
type interimWriter struct {
	// Set by begin on the request's goroutine before the timer is armed, and
	// read-only until finish.
	h          *Handler
	rw         http.ResponseWriter
	realHeader http.Header
	ctx        context.Context
	start      time.Duration // on the monoNow clock
	http2      bool
	fields     []headerField
	gate       *gatedBody // nil unless 102s wait for the body (see begin)
	timer      *time.Timer
	// inflight counts runs of tick that are scheduled or running, so that
	// stop can wait until none can touch the response.
	inflight sync.WaitGroup

	// mu serialises everything written to rw before the final status: the
	// ticks, 1xx from the next handler and the commit of the final status.
	mu sync.Mutex
	// Guarded by mu:
	// base is the innermost writer, net/http's own, found by Unwrap at the
	// first 102. The 102s go straight to it, past the writers Caddy's
	// server puts outside the route: its access-log recorder and metrics
	// wrapper take any WriteHeader call as the response's first byte and
	// status, and would record 102 (caddy_http_response_duration_seconds
	// with code="102").
	base    http.ResponseWriter
	phase   phase
	count   int           // 102s sent by this module
	interim bool          // some 1xx (ours or the next handler's) was written
	nextDue time.Duration // on the monoNow clock: a tick before this is stale; 0 for the first
	vacated bool          // realHeader's fields were moved into held or stash
	stash   fieldStash
	gated   bool // 102s wait until the request body has started
	overdue bool // a 102 fell due while gated

	// Owned by the next handler's side. A tick touches held only to move
	// the real map's fields into it before it is handed out (vacateLocked).
	held      http.Header // the header map the next handler sees before the final status
	handedOut bool        // held was given to the next handler
	committed bool        // phase has left waiting (a copy readable without mu)
	hijacked  bool
}

// begin prepares the writer for a request. No other goroutine can see it yet.
func (w *interimWriter) begin(h *Handler, rw http.ResponseWriter, r *http.Request, prefer bool) {
	w.h = h
	w.rw = rw
	w.realHeader = rw.Header()
	w.ctx = r.Context()
	w.start = monoNow()
	w.http2 = r.ProtoMajor == 2
	w.fields = h.fields
	if h.resolveFields {
		w.fields = resolveFields(h.fields, r)
	}

	// RFC 2518 §10.1: a 102 says the server has the whole request. With
	// Expect: 100-continue the client is still waiting to send its body, so
	// 102s wait for the next handler's first read of the body.
	//
	// HTTP/1.1: Go writes the automatic 100 Continue from the body reader,
	// without the lock a 1xx takes, so it could interleave with a 102 or a
	// 1xx that reverse_proxy forwards from its transport's goroutine. The
	// module writes the 100 itself under mu on that first read, which turns
	// Go's off (RFC 9110 §10.1.1).
	//
	// HTTP/2 drops the automatic 100 once any HEADERS frame went out, and
	// hides Expect from the handler: for every HTTP/2 request with a body,
	// 102s wait until the first body read has returned, by which time the
	// 100, if the client asked for one, is on the wire.
	if r.Body != nil && r.Body != http.NoBody {
		if r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
			w.gated = true
			w.gate = &gatedBody{ReadCloser: r.Body, w: w, sendContinue: true}
			r.Body = w.gate
		} else if w.http2 && r.ContentLength != 0 {
			w.gated = true
			w.gate = &gatedBody{ReadCloser: r.Body, w: w}
			r.Body = w.gate
		}
	}

	// The lock orders everything above before the first tick.
	w.mu.Lock()
	// draft-wright-http-progress: a client that asks for progress gets the
	// first 102 at once.
	if !prefer {
		w.scheduleLocked(h.delay)
	} else if w.gated {
		w.overdue = true
	} else {
		w.sendInterimLocked(w.start)
		w.nextDue = w.start + h.interval
		w.scheduleLocked(h.interval)
	}
	w.mu.Unlock()
}

// scheduleLocked arms the timer to run tick after d. Go 1.23 timers:
// Reset reports true when it replaced a run that had not started, whose
// count is then dropped; otherwise the new run comes on top of any that
// is already running.
func (w *interimWriter) scheduleLocked(d time.Duration) {
	if w.h.Max > 0 && w.count >= w.h.Max {
		return
	}
	w.inflight.Add(1)
	if w.timer.Reset(d) {
		w.inflight.Done()
	}
}

// stopTimer cancels a scheduled tick. It does not wait for a running one.
func (w *interimWriter) stopTimer() {
	if w.timer.Stop() {
		w.inflight.Done()
	}
}

// tick runs on the timer's goroutine.
func (w *interimWriter) tick() {
	defer w.inflight.Done()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != waiting {
		return
	}
	now := monoNow()
	if now < w.nextDue {
		// Rescheduled while this run was already on its way (a 1xx from
		// the next handler restarted the clock); the newer run sends.
		return
	}
	if w.gated {
		w.overdue = true
		return
	}
	w.sendInterimLocked(now)
	// The 102s keep to a grid, delay + k × interval from the start (or from
	// the last 1xx of the next handler's own), so that late ticks on a busy
	// server do not push every later one back; slots already missed are
	// skipped rather than sent in a burst.
	due := w.nextDue
	if due == 0 {
		due = w.start + w.h.delay
	}
	next := due + w.h.interval
	if next <= now {
		next = now + w.h.interval - (now-due)%w.h.interval
	}
	w.nextDue = next
	w.scheduleLocked(next - now)
}

// sendInterimLocked writes one 102 carrying only the configured fields.
func (w *interimWriter) sendInterimLocked(now time.Duration) {
	if w.h.Max > 0 && w.count >= w.h.Max {
		return
	}
	w.vacateLocked()
	w.count++
	for _, f := range w.fields {
		if f.perInterim {
			w.realHeader[f.name] = fillInterimPlaceholders(f.values, w.count, now-w.start)
		} else {
			w.realHeader[f.name] = f.values
		}
	}
	if w.base == nil {
		w.base = innermost(w.rw)
	}
	w.writeInterimLocked(w.base, http.StatusProcessing)

	server := serverName(w.ctx)
	interimsSent.WithLabelValues(server).Inc()
	if w.count == 1 {
		requestsWithInterim.WithLabelValues(server).Inc()
	}
	if c := w.h.logger.Check(zapcore.DebugLevel, "sent 102 Processing"); c != nil {
		orig, _ := w.ctx.Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
		c.Write(
			// Caddy keeps a copy of the request as it arrived in the
			// context, which, unlike r, no handler changes.
			zap.String("method", orig.Method),
			zap.String("uri", orig.RequestURI),
			zap.Int("count", w.count),
			zap.Duration("elapsed", now-w.start),
		)
	}
}

// writeInterimLocked writes a 1xx carrying what realHeader holds, and
// empties realHeader again if its response fields are kept in held.
//
// x/net/http2 queues a 1xx HEADERS frame for its frame writer goroutine
// with the live map, and WriteHeader can return before that goroutine has
// encoded it: when the stream is reset or the connection closes. Writing to
// the map afterwards would then race with the encoder. When the map holds
// Transfer-Encoding, though, WriteHeader hands the frame writer a private
// clone without that field, so realHeader is ours again however
// WriteHeader returned. HTTP/1.1 writes 1xx synchronously (also without
// Transfer-Encoding), and HTTP/3 synchronously.
func (w *interimWriter) writeInterimLocked(to http.ResponseWriter, code int) {
	if w.http2 {
		te, hadTE := w.realHeader["Transfer-Encoding"]
		w.realHeader["Transfer-Encoding"] = forceHeaderClone
		to.WriteHeader(code)
		if hadTE {
			w.realHeader["Transfer-Encoding"] = te
		} else {
			delete(w.realHeader, "Transfer-Encoding")
		}
	} else {
		to.WriteHeader(code)
	}
	w.interim = true
	if w.vacated {
		clear(w.realHeader)
	}
}

// forceHeaderClone is the Transfer-Encoding value that makes HTTP/2 clone
// the header map for a 1xx (see writeInterimLocked).
var forceHeaderClone = []string{"chunked"}

// vacateLocked moves the response's header fields out of the real map:
// into held if this writer has a map, or into the stash if they fit (the
// usual Server and Alt-Svc). A request waiting on reverse_proxy or webdav
// has not asked for its header map yet, and a fresh writer then needs no
// map of its own while it waits.
func (w *interimWriter) vacateLocked() {
	if w.vacated {
		return
	}
	if w.held == nil && w.stash.take(w.realHeader) {
		w.vacated = true
		return
	}
	if w.held == nil {
		w.held = make(http.Header, len(w.realHeader))
	}
	moveHeader(w.held, w.realHeader)
	w.vacated = true
}

// restoreLocked moves the response's header fields back into the real map.
func (w *interimWriter) restoreLocked() {
	w.stash.moveTo(w.realHeader)
	moveHeader(w.realHeader, w.held)
}

// Header returns the map the next handler writes its fields into.
func (w *interimWriter) Header() http.Header {
	if w.committed {
		return w.realHeader
	}
	if w.handedOut {
		return w.held
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.vacateLocked()
	if w.held == nil {
		w.held = make(http.Header, w.stash.n)
	}
	w.stash.moveTo(w.held)
	w.handedOut = true
	return w.held
}

// WriteHeader passes a 1xx through and commits any other status.
func (w *interimWriter) WriteHeader(code int) {
	if w.committed {
		w.rw.WriteHeader(code) // Go logs the superfluous call
		return
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.forwardInterim(code)
		return
	}
	w.commit(code)
}

// forwardInterim writes a 1xx of the next handler's own, such as
// reverse_proxy forwarding an upstream's 103 Early Hints, with the fields the
// next handler has set, and restarts the 102 clock. It may be called from a
// goroutine other than the request's (reverse_proxy's Got1xxResponse).
func (w *interimWriter) forwardInterim(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != waiting {
		return
	}
	if w.vacated {
		w.stash.copyTo(w.realHeader)
		for k, v := range w.held {
			w.realHeader[k] = v
		}
	}
	w.writeInterimLocked(w.rw, code)
	w.nextDue = monoNow() + w.h.interval
	w.scheduleLocked(w.h.interval)
}

// commit ends the 102s and writes the final status with the next handler's
// header fields.
func (w *interimWriter) commit(code int) {
	w.mu.Lock()
	w.phase = final
	if w.vacated {
		w.restoreLocked()
	}
	w.mu.Unlock()
	w.committed = true
	w.stopTimer()
	w.rw.WriteHeader(code)
}

// Write commits an implicit 200 explicitly, so that Caddy's access log and
// metrics, which saw the 102s go by, record the real final status.
func (w *interimWriter) Write(p []byte) (int, error) {
	if !w.committed {
		w.commit(http.StatusOK)
	}
	return w.rw.Write(p)
}

// ReadFrom keeps file_server's sendfile path.
func (w *interimWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.committed {
		w.commit(http.StatusOK)
	}
	if rf, ok := w.rw.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.rw}, src)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *interimWriter) FlushError() error {
	if !w.committed {
		w.commit(http.StatusOK)
	}
	return http.NewResponseController(w.rw).Flush()
}

// Flush implements http.Flusher.
func (w *interimWriter) Flush() {
	_ = w.FlushError()
}

// Hijack ends the 102s once the connection is taken. The lock is held
// across the hijack so that no tick writes to the connection meanwhile.
func (w *interimWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	conn, brw, err := http.NewResponseController(w.rw).Hijack()
	if err == nil {
		w.phase = final
	}
	w.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	w.committed = true
	w.hijacked = true
	w.stopTimer()
	return conn, brw, nil
}

// Push implements http.Pusher when the underlying writer does.
func (w *interimWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := w.rw.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

// Unwrap lets http.ResponseController reach the connection's deadlines and
// full-duplex setting.
func (w *interimWriter) Unwrap() http.ResponseWriter {
	return w.rw
}

// stop runs when next returns or panics. After it, no tick is scheduled or
// running, and only the request's goroutine touches the writer.
func (w *interimWriter) stop() {
	// After the final status no tick writes or re-arms, and commit has
	// stopped the timer: only a tick already running can remain.
	if !w.committed {
		w.mu.Lock()
		w.phase = done
		w.mu.Unlock()
		w.stopTimer()
	}
	w.inflight.Wait()
}

// finish settles the response headers, records the count and makes the
// writer clean for the pool.
func (w *interimWriter) finish(r *http.Request, err error, panicking bool) {
	switch {
	case !w.committed:
		if w.vacated {
			// An error or a panic: Caddy's error handling writes the
			// response and should see what the next handler had set.
			w.restoreLocked()
		}
		if err == nil && !panicking && w.interim {
			// The next handler wrote nothing after a 1xx of its own:
			// make Go's implicit 200 explicit, or Caddy's access log
			// records that 1xx as the status.
			w.rw.WriteHeader(http.StatusOK)
		}
	case !w.hijacked && len(w.held) > 0:
		// Fields added after the final status to a map the next handler
		// kept from before it: trailers, which Go reads from the real map
		// when the handler returns.
		moveHeader(w.realHeader, w.held)
	}
	if w.gate != nil {
		r.Body = w.gate.ReadCloser
	}

	caddyhttp.SetVar(r.Context(), InterimCountVar, w.count)
	if c := w.h.logger.Check(zapcore.DebugLevel, "request done"); c != nil {
		c.Write(zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Int("interim_count", w.count))
	}
	w.reset()
}

// reset clears every per-request field, keeping the timer and the
// (emptied) header map for the next request.
func (w *interimWriter) reset() {
	clear(w.held)
	w.h, w.rw, w.realHeader, w.ctx = nil, nil, nil, nil
	w.start, w.http2 = 0, false
	w.fields, w.gate = nil, nil
	w.base, w.phase, w.count, w.interim, w.nextDue = nil, waiting, 0, false, 0
	w.vacated, w.gated, w.overdue, w.stash = false, false, false, fieldStash{}
	w.handedOut, w.committed, w.hijacked = false, false, false
}

// gatedBody opens the 102 gate on the first read of the request body (see
// begin): before it, with the module's own 100 Continue (HTTP/1.1), or
// after it has returned (HTTP/2).
type gatedBody struct {
	io.ReadCloser
	w            *interimWriter
	sendContinue bool
	opened       bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.opened {
		return b.ReadCloser.Read(p)
	}
	b.opened = true
	if b.sendContinue {
		b.w.openGate(true)
		return b.ReadCloser.Read(p)
	}
	n, err := b.ReadCloser.Read(p)
	b.w.openGate(false)
	return n, err
}

func (w *interimWriter) openGate(sendContinue bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.phase != waiting {
		return // Go's own 100 Continue logic takes over after the final status
	}
	if sendContinue {
		// The automatic 100 carries no fields; Go writes the real map on
		// a 1xx, so it must be empty.
		w.vacateLocked()
		if w.base == nil {
			w.base = innermost(w.rw)
		}
		w.writeInterimLocked(w.base, http.StatusContinue)
	}
	w.gated = false
	if w.overdue {
		w.overdue = false
		w.nextDue = 0
		w.scheduleLocked(0)
	}
}

// innermost follows Unwrap down to the writer of net/http (or quic-go).
// The wrappers share that writer's header map, which begin took as
// realHeader.
func innermost(rw http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := rw.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return rw
		}
		rw = u.Unwrap()
	}
}

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow reads the monotonic clock only: time.Since on a time with a
// monotonic reading skips the wall clock, which time.Now also reads, and
// clock reads are a good part of the fast path's cost.
func monoNow() time.Duration {
	return time.Since(monoBase)
}

// fieldStash holds the few header fields of a request whose real map was
// emptied for a 102 before the next handler asked for a map.
type fieldStash struct {
	n      int
	keys   [2]string
	values [2][]string
}

// take moves every field of h into the stash if they fit.
func (s *fieldStash) take(h http.Header) bool {
	if len(h) > len(s.keys) {
		return false
	}
	for k, v := range h {
		s.keys[s.n], s.values[s.n] = k, v
		s.n++
	}
	clear(h)
	return true
}

// copyTo adds the stashed fields to h.
func (s *fieldStash) copyTo(h http.Header) {
	for i := range s.n {
		h[s.keys[i]] = s.values[i]
	}
}

// moveTo adds the stashed fields to h and empties the stash.
func (s *fieldStash) moveTo(h http.Header) {
	s.copyTo(h)
	*s = fieldStash{}
}

// moveHeader moves every field of src into dst, leaving src empty.
func moveHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
	clear(src)
}

// resolveFields resolves Caddy placeholders in the configured fields. It
// runs on the request's goroutine: the replacer is not safe from a timer.
func resolveFields(fields []headerField, r *http.Request) []headerField {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return fields
	}
	resolved := make([]headerField, len(fields))
	for i, f := range fields {
		resolved[i] = f
		resolved[i].values = make([]string, len(f.values))
		for j, v := range f.values {
			resolved[i].values[j] = repl.ReplaceKnown(v, "")
		}
	}
	return resolved
}

// fillInterimPlaceholders fills in the module's own placeholders for one 102.
func fillInterimPlaceholders(values []string, count int, elapsed time.Duration) []string {
	out := make([]string, len(values))
	for i, v := range values {
		v = strings.ReplaceAll(v, countPlaceholder, strconv.Itoa(count))
		out[i] = strings.ReplaceAll(v, elapsedPlaceholder, elapsed.Round(time.Millisecond).String())
	}
	return out
}

// prefersProcessing reports whether the Prefer fields (RFC 7240 §2) hold the
// preference "processing" of draft-wright-http-progress.
func prefersProcessing(values []string) bool {
	for _, v := range values {
		for v != "" {
			var pref string
			pref, v, _ = strings.Cut(v, ",")
			pref, _, _ = strings.Cut(pref, ";")
			pref, _, _ = strings.Cut(pref, "=")
			if strings.EqualFold(strings.TrimSpace(pref), "processing") {
				return true
			}
		}
	}
	return false
}

// serverName is the label Caddy's own HTTP metrics use for the server.
func serverName(ctx context.Context) string {
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil && srv.Name() != "" {
		return srv.Name()
	}
	return "UNKNOWN"
}

// writerOnly hides every method but Write, so io.Copy cannot loop back into
// ReadFrom.
type writerOnly struct{ io.Writer }

// Interface guards
var (
	_ http.ResponseWriter = (*interimWriter)(nil)
	_ http.Flusher        = (*interimWriter)(nil)
	_ http.Hijacker       = (*interimWriter)(nil)
	_ http.Pusher         = (*interimWriter)(nil)
	_ io.ReaderFrom       = (*interimWriter)(nil)
)
