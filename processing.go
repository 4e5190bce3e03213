package processing

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"github.com/c055b0d7/caddy-processing/internal/prefer"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ServeHTTP sends 102 responses while next works on the request.
//
// Its frame stays on the request goroutine's stack for as long as next
// runs, and next's deepest calls (writing the response) run through the
// writer's methods: the work before next is in prepare and the work after
// it in end, so that only what next needs is on the stack. A goroutine
// starts with a small stack that is copied into one twice the size when
// it runs out, so a few hundred bytes more on the deepest path can double
// a request's stack.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (err error) {
	iw, served, err := h.prepare(w, r, next)
	if served {
		return err
	}
	if iw == nil {
		return next.ServeHTTP(w, r)
	}
	returned := false
	defer iw.end(r, &err, &returned)
	err = next.ServeHTTP(iw, r)
	returned = true
	return err
}

// prepare decides what happens to the request: answered by async mode
// (served), left alone (no writer), or given a writer whose first 102 is
// armed.
func (h *Handler) prepare(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (iw *interimWriter, served bool, err error) {
	// Caddy's variable table is read by other goroutines while next runs
	// (reverse_proxy's transport dials on its own goroutine and reads it,
	// also after a cancelled RoundTrip returned), so the module writes it
	// only here, before next starts, with a value that reads the live
	// count.
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	// The writer of a processing handler this one is nested in (a
	// site-wide one and one in a handle block): it stays the request's
	// only writer of 102s (see adopt below).
	outer := enclosingWriter(w)

	if h.Async != nil {
		if outer != nil {
			// Async mode may answer with 102s of its own
			// (Prefer: processing): the outer writer's must stop first.
			outer.pause()
		}
		if handled, err := h.Async.Serve(w, r, next); handled {
			// No 102 goes to a request that async mode answered. Its job
			// runs on a copy of the table, and this request's next never
			// runs, so the write races with nothing. An outer writer
			// keeps its own count.
			if outer == nil {
				setCountVar(vars, &noInterims)
			}
			return nil, true, err
		}
	}
	// RFC 9110 §15.2: a server must not send a 1xx to an HTTP/1.0 client,
	// and Go's server would send one anyway.
	if !r.ProtoAtLeast(1, 1) {
		setCountVar(vars, &noInterims)
		return nil, false, nil
	}
	asked := prefer.Has(r.Header["Prefer"], "processing")
	// A processing handler inside the route of another one sees the same
	// request: two writers would each write 102s to net/http's writer
	// under their own lock, at once, which corrupts the response. The
	// outer writer stays the only one and follows this handler's
	// configuration from now on, the more specific one.
	if outer != nil {
		outer.adopt(h, r, asked)
		return nil, false, nil
	}
	if h.OptIn && !asked {
		setCountVar(vars, &noInterims)
		return nil, false, nil
	}

	// The writer is made for this request and never reused: next may hand
	// it, or the body wrapper that points to it, to goroutines that
	// outlive this call (Go's Transport reads and closes request bodies
	// after RoundTrip returned; a handler's goroutine may keep the writer).
	// Once stop has run, every such late call finds the writer done.
	iw = &interimWriter{h: h, rw: w, realHeader: w.Header(), req: r}
	iw.entry.writer = iw
	setCountVar(vars, &iw.count)
	iw.begin(r, asked, startOf(vars))
	return iw, false, nil
}

// startOf is when Caddy's server received the request, on monoClock: the
// variable start_time, which Caddy sets from time.Now before any route
// runs (caddyhttp.PrepareRequest, replacer.go). Its monotonic reading makes
// that a subtraction and no clock read. Without it (the module run outside
// Caddy's server), it is now.
func startOf(vars map[string]any) time.Duration {
	if t, ok := vars["start_time"].(time.Time); ok {
		return t.Sub(monoBase)
	}
	return monoClock{}.now()
}

// end runs, deferred, when next returns or panics. It calls recover itself,
// as only a deferred function can: a panic after 102s and before the final
// status becomes an error that Caddy's error handling (handle_errors)
// answers, since the client was told the request is in progress. Any other
// panic goes on to net/http untouched, keeping its stack;
// http.ErrAbortHandler asks net/http to abort the response.
func (w *interimWriter) end(r *http.Request, err *error, returned *bool) {
	ended := w.stop()
	if !*returned && ended&interimSent != 0 && ended.phase() <= phaseWaiting {
		if rec := recover(); rec == http.ErrAbortHandler {
			w.finish(r, ended, *err, true)
			panic(rec)
		} else if rec != nil { // nil: runtime.Goexit, not a panic
			w.h.logger.Error("panic in a handler after 102 Processing",
				zap.Any("panic", rec), zap.ByteString("stack", debug.Stack()))
			*err = caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("panic: %v", rec))
			*returned = true
		}
	}
	w.finish(r, ended, *err, !*returned)
}

// setCountVar puts the count in the variable table, if the request has one.
func setCountVar(vars map[string]any, c *interimCount) {
	if vars != nil {
		vars[InterimCountVar] = c
	}
}

// requestState is where one request stands, in one word: its phase, where
// the next handler's header fields are, and what has been written. Every
// change is made under the writer's stateMu; the ResponseWriter methods and
// the body wrapper read it without the lock (an atomic load).
//
// The phases and what moves a request between them (events in columns,
// each made under stateMu by the function named; "-" cannot happen):
//
//	phase \ event  102 falls due   body in            final status  Hijack    ServeHTTP returns
//	               (due)           (bodyIn)           (claimCommit) (Hijack)  (stop)
//	receiving      +due            waiting; +due: 102 committed     hijacked  done
//	                               now, next one
//	waiting        102, next one   -                  committed     hijacked  done
//	committed      dropped         -                  superfluous   hijacked  done
//	hijacked       dropped         -                  -             -         done
//	done           dropped         -                  ignored       refused   -
//
// Once the phase is past receiving, the body wrapper only passes reads
// through, also for a transport that reads the body after ServeHTTP
// returned.
//
// Within receiving and waiting:
//   - The first read of the body of an HTTP/1.1 request that expects
//     100-continue writes the 100 and clears expectsContinue
//     (writeContinue, bodygate.go).
//   - A 1xx of the next handler's own (forwardInterim) is written, and in
//     waiting restarts the 102 schedule.
//   - Any 1xx moves the next handler's fields out of the real map:
//     fieldsInReal to fieldsStashed or fieldsHeld (vacateLocked); its first
//     Header call moves them to fieldsHeld (handOutLocked). The final status
//     moves them back to fieldsInReal (restoreLocked), as stop does for a
//     request that ends without one.
//   - Each 1xx sets interimSent.
type requestState uint32

// The phase, the state's low bits.
const (
	// phaseReceiving: the request body is still arriving. RFC 2518 §10.1:
	// a 102 says the server has the complete request, so 102s wait for the
	// end of the body (bodygate.go); one that falls due meanwhile sets due.
	phaseReceiving requestState = iota
	// phaseWaiting: the request is in; 102s go out on schedule until the
	// final status.
	phaseWaiting
	// phaseCommitted: the final status (200 or more, or 101) is written;
	// nothing more goes out from the scheduler.
	phaseCommitted
	// phaseHijacked: the connection was taken; the header maps are not
	// touched again.
	phaseHijacked
	// phaseDone: ServeHTTP is returning; nothing but the request's own
	// goroutine touches the response again (x/net's HTTP/2 server panics
	// on a late WriteHeader, and net/http's HTTP/1.1 writer may serve
	// another request by then). A writer never leaves done: it is not
	// reused.
	phaseDone

	phaseMask requestState = 7
)

// Where the next handler's header fields are before the final status
// (fields.go).
const (
	// fieldsInReal: in the real map, where Caddy's server put Server and
	// Alt-Svc; no 1xx has gone out and the next handler has not asked for
	// a map.
	fieldsInReal requestState = 0 << 3
	// fieldsStashed: a 1xx moved them (Server and Alt-Svc at most) into
	// the writer's inline stash; the next handler has not asked for a map.
	fieldsStashed requestState = 1 << 3
	// fieldsHeld: in held, the map the next handler has, or gets from its
	// next Header call without the lock.
	fieldsHeld requestState = 2 << 3

	fieldsMask requestState = 3 << 3
)

// Flags.
const (
	// due: a 102 fell due while receiving, or the client asked for one at
	// once; it goes out as soon as the body is in.
	due requestState = 1 << 5
	// expectsContinue: an HTTP/1.1 client waits for 100 Continue before it
	// sends the body, which the module writes on the first read
	// (bodygate.go).
	expectsContinue requestState = 1 << 6
	// interimSent: some 1xx (the module's or the next handler's) was
	// written, so the request's end makes an implicit 200 explicit
	// (finish).
	interimSent requestState = 1 << 7
)

func (s requestState) phase() requestState  { return s & phaseMask }
func (s requestState) fields() requestState { return s & fieldsMask }

// withPhase and withFields replace one part of the state.
func (s requestState) withPhase(p requestState) requestState  { return s&^phaseMask | p }
func (s requestState) withFields(f requestState) requestState { return s&^fieldsMask | f }

// stateWord holds a requestState for reads from any goroutine.
type stateWord struct{ v atomic.Uint32 }

func (a *stateWord) load() requestState { return requestState(a.v.Load()) }

// storeLocked sets the state: under stateMu, or on the request's goroutine
// before the writer is shared or once the phase is done.
func (a *stateWord) storeLocked(s requestState) { a.v.Store(uint32(s)) }

// interimWriter is one request's state and the ResponseWriter the next
// handler sees (writer.go). It keeps the next handler's header fields out
// of the real map while 1xx may go out (fields.go), holds 102s back until
// the request body is in (bodygate.go), and takes its turns on the
// process's wheel (scheduler.go).
type interimWriter struct {
	// Every waiting request carries one, most of the heap the module adds
	// to a waiting request (BenchmarkInFlightMemory reports it).

	// Set by prepare and begin on the request's goroutine before the
	// writer is shared, read-only after; but h and fields, which adopt
	// changes under stateMu on the request's goroutine, and which other
	// goroutines read under stateMu.
	h          *Handler
	rw         http.ResponseWriter
	realHeader http.Header
	// req is the request as this module received it, for its protocol
	// and its context (the server's name and the original request, in
	// metrics and logs).
	req   *http.Request
	start time.Duration // on monoClock
	// fields are the handler's, or this request's when they hold Caddy
	// placeholders (resolved once, on the request's goroutine).
	fields *[]headerField
	// entry is the request's place on the wheel; it points back to the
	// writer, whose due the wheel calls. Its gen, the generation of the
	// scheduled fire, is written under stateMu too, so due compares under
	// stateMu.
	entry wheelEntry

	// stateMu guards every change of state and the fields below, and
	// serialises everything written to rw before the final status: 102s,
	// 1xx from the next handler's goroutines, the module's 100 Continue
	// and the commit of the final status. It is held across those writes.
	// Lock order: stateMu, then the wheel's mu.
	stateMu sync.Mutex
	state   stateWord
	// count is how many 102s this module sent, the value of the request
	// variable InterimCountVar. Written under stateMu, read from anywhere.
	count interimCount
	// nextDue is when the scheduled 102 is due, on the handler's grid
	// before rounding: 102s keep to delay + k × interval from the start,
	// or from the next handler's last 1xx.
	nextDue time.Duration
	// stash holds the fields while they are fieldsStashed.
	stash fieldStash
	// held is the header map the next handler sees before the final
	// status, once fields are fieldsHeld. From then on the module writes
	// it only at the final status (under stateMu) or once the phase is
	// done; the next handler owns it otherwise.
	held http.Header
	// quiet: no more 102s: a nested handler with opt_in, on a request
	// that did not ask for them, took over (adopt), or a nested handler's
	// async mode may answer the request (pause).
	quiet bool
}

// begin arms the first 102. No other goroutine can see the writer yet, so
// it takes no lock: the wheel's, taken to schedule the first fire, orders
// everything here before that fire.
func (w *interimWriter) begin(r *http.Request, asked bool, start time.Duration) {
	h := w.h
	w.start = start
	w.fields = &h.fields
	if h.resolveFields {
		resolved := resolveFields(h.fields, r)
		w.fields = &resolved
	}
	initial := w.gateBody(r)
	w.state.storeLocked(initial)
	switch {
	case !asked:
		w.scheduleLocked(w.start + h.delay)
	case initial.phase() == phaseReceiving:
		// draft-wright-http-progress: a client that asks for progress
		// gets its first 102 at once, here once the body is in.
		w.state.storeLocked(initial | due)
	default:
		w.sendInterimLocked(monoClock{}.now(), false)
		w.scheduleLocked(w.start + h.interval)
	}
}

// enclosingWriter is the writer of a processing handler that w is, or
// wraps, or nil.
func enclosingWriter(w http.ResponseWriter) *interimWriter {
	for {
		if iw, ok := w.(*interimWriter); ok {
			return iw
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}

// adopt makes the writer follow h, a processing handler nested inside the
// one that made it, from now on: its delay, interval, max, opt_in and
// header fields. It runs on the request's goroutine, as begin does; the
// wheel's fires read h and fields under stateMu.
func (w *interimWriter) adopt(h *Handler, r *http.Request, asked bool) {
	fields := &h.fields
	if h.resolveFields {
		resolved := resolveFields(h.fields, r)
		fields = &resolved
	}
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	prev := w.h
	w.h, w.fields = h, fields
	w.quiet = h.OptIn && !asked
	s := w.state.load()
	switch {
	case w.quiet:
		// A fire already scheduled finds the writer quiet.
	case s.phase() == phaseReceiving && asked:
		w.state.storeLocked(s | due)
	case s.phase() == phaseReceiving:
		w.scheduleLocked(w.start + h.delay)
	case s.phase() == phaseWaiting && asked && w.count.load() == 0:
		// As in begin: a client that asks for progress gets a 102 at once.
		now := monoClock{}.now()
		w.sendInterimLocked(now, false)
		w.scheduleLocked(now + h.interval)
	case s.phase() == phaseWaiting:
		at := w.start + h.delay
		if w.count.load() > 0 {
			// The last 102 went out at the slot before nextDue.
			at = w.nextDue - prev.interval + h.interval
		}
		w.scheduleLocked(at)
	}
}

// pause stops the writer's 102s until adopt decides again. After it, no
// fire writes: a running one held stateMu, and later ones find quiet.
func (w *interimWriter) pause() {
	w.stateMu.Lock()
	w.quiet = true
	w.stateMu.Unlock()
}

// scheduleLocked puts the next 102, due at the grid time at, on the wheel,
// rounded up to the handler's coalescing grid.
func (w *interimWriter) scheduleLocked(at time.Duration) {
	if w.quiet || w.h.Max > 0 && w.count.load() >= w.h.Max {
		return
	}
	w.nextDue = at
	g := w.grid()
	w.h.wheel.schedule(&w.entry, (at+g-1)/g*g)
}

// grid is the step this request's 102s fall due on. Only streams that share
// a connection gain from falling due together (HTTP/2 and HTTP/3); an
// HTTP/1.1 connection carries one request at a time, and there a coarser
// grid would only bunch the 102s of many connections into fewer ticks and
// make each later.
func (w *interimWriter) grid() time.Duration {
	if w.req.ProtoMajor >= 2 {
		return w.h.grid
	}
	return wheelTick
}

// due runs on a goroutine the wheel started for this request's fire.
func (w *interimWriter) due(gen uint32) {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	if gen != w.entry.gen {
		return // rescheduled since
	}
	switch s := w.state.load(); s.phase() {
	case phaseReceiving:
		w.state.storeLocked(s | due)
		return
	case phaseWaiting:
	default:
		return
	}
	now := monoClock{}.now()
	w.sendInterimLocked(now, true)
	// The next one keeps to the schedule (delay + k × interval), so that
	// a late fire on a busy server does not push every later one back.
	// Slots already missed, or that would come less than half an interval
	// after this 102, are skipped rather than sent in a burst.
	next := w.nextDue + w.h.interval
	for next < now+w.h.interval/2 {
		next += w.h.interval
	}
	w.scheduleLocked(next)
}

// sendInterimLocked writes one 102 carrying only the configured fields;
// scheduled says it was due at nextDue (not the first 102 a client asked
// for, sent at once).
func (w *interimWriter) sendInterimLocked(now time.Duration, scheduled bool) {
	count := w.count.load()
	if w.quiet || w.h.Max > 0 && count >= w.h.Max {
		return
	}
	w.vacateLocked()
	count++
	w.count.n.Store(int32(count))
	for _, f := range *w.fields {
		if f.perInterim {
			w.realHeader[f.name] = fillInterimPlaceholders(f.values, count, now-w.start)
		} else {
			w.realHeader[f.name] = f.values
		}
	}
	// The 102s go straight to net/http's own writer, past the writers
	// Caddy's server puts outside the route: its access-log recorder and
	// metrics wrapper take any WriteHeader call as the response's first
	// byte and status, and would record 102
	// (caddy_http_response_duration_seconds with code="102").
	w.writeInterimLocked(caddyutil.Innermost(w.rw), http.StatusProcessing)

	ctx := w.req.Context()
	server := serverName(ctx)
	interimsSent.WithLabelValues(server).Inc()
	if scheduled {
		interimLateness.WithLabelValues(server).Observe((now - w.nextDue).Seconds())
	}
	if count == 1 {
		requestsWithInterim.WithLabelValues(server).Inc()
	}
	if c := w.h.logger.Check(zapcore.DebugLevel, "sent 102 Processing"); c != nil {
		orig, _ := ctx.Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
		c.Write(
			// Caddy keeps a copy of the request as it arrived in the
			// context, which, unlike r, no handler changes.
			zap.String("method", orig.Method),
			zap.String("uri", orig.RequestURI),
			zap.Int("count", count),
			zap.Duration("elapsed", now-w.start),
		)
	}
}

// stop runs when next returns or panics. After it, no fire is scheduled or
// running, and only the request's goroutine touches the writer; a late call
// from another goroutine finds it done (writer.go, bodygate.go). It returns
// the state the request was in.
func (w *interimWriter) stop() requestState {
	w.stateMu.Lock()
	ended := w.state.load()
	w.state.storeLocked(ended.withPhase(phaseDone))
	w.stateMu.Unlock()
	// Outside stateMu: a fire already dispatched takes it, finds done, and
	// returns; wait for it, so that no goroutine outlives the request.
	if fired := w.h.wheel.cancel(&w.entry); fired != nil {
		<-fired
	}
	return ended
}

// finish settles the response headers and logs the count. It runs on the
// request's goroutine after next returned and stop made the writer done,
// and writes nothing that another goroutine may read unsynchronised:
//   - Caddy's variable table: the count went in before next ran, as a
//     value that reads the live count (see ServeHTTP).
//   - r.Body: left as it is. The body wrapper may still be read by a
//     transport after RoundTrip returned; on a writer that is done its
//     first read only passes through (bodygate.go).
//   - The real header map and rw: only net/http's goroutine for this
//     request and the next handler touch them. The next handler has
//     returned; reverse_proxy stops forwarding 1xx from its transport's
//     goroutine once RoundTrip returned (roundTripDone, under its mutex),
//     and any other late call is turned away by done.
//   - held: the next handler's map. It has returned; a goroutine of its
//     that still writes the map breaks http.Handler's contract.
func (w *interimWriter) finish(r *http.Request, ended requestState, err error, panicking bool) {
	switch ended.phase() {
	case phaseCommitted:
		if len(w.held) > 0 {
			// Fields added after the final status to a map the next
			// handler kept from before it: trailers, which Go reads from
			// the real map when the handler returns.
			moveHeader(w.realHeader, w.held)
		}
	case phaseReceiving, phaseWaiting:
		// An error or a panic before any final status: Caddy's error
		// handling writes the response and should see what the next
		// handler had set.
		w.restoreLocked()
		if err == nil && !panicking && ended&interimSent != 0 {
			// The next handler wrote nothing after a 1xx of its own:
			// make Go's implicit 200 explicit, or Caddy's access log
			// records that 1xx as the status.
			w.rw.WriteHeader(http.StatusOK)
		}
	}
	if c := w.h.logger.Check(zapcore.DebugLevel, "request done"); c != nil {
		c.Write(zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Int("interim_count", w.count.load()))
	}
}

// interimCount is the value of the request variable InterimCountVar: the
// number of 102s sent so far, readable from any goroutine. It prints as its
// digits (the placeholder {http.vars.processing.interim_count}, through the
// fmt fallback of caddy.ToString) and marshals as a JSON number (log_append
// logs it with zap.Any, which reflects it). It is not a fmt.Stringer on
// purpose: zap.Any logs a Stringer as a JSON string.
type interimCount struct{ n atomic.Int32 }

func (c *interimCount) load() int { return int(c.n.Load()) }

// Format implements fmt.Formatter.
func (c *interimCount) Format(f fmt.State, _ rune) {
	var buf [20]byte
	_, _ = f.Write(strconv.AppendInt(buf[:0], int64(c.n.Load()), 10))
}

// MarshalJSON implements json.Marshaler.
func (c *interimCount) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(c.n.Load()), 10), nil
}

// noInterims is the variable's value for a request the module leaves alone
// (HTTP/1.0, or opt_in without Prefer): a count that stays 0.
var noInterims interimCount

// serverName is the label Caddy's own HTTP metrics use for the server.
func serverName(ctx context.Context) string {
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil && srv.Name() != "" {
		return srv.Name()
	}
	return "UNKNOWN"
}
