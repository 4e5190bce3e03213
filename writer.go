package processing

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
)

// The http.ResponseWriter methods of interimWriter, as the next handler and
// its goroutines call them. Each first reads the state without the lock:
// after the final status most calls go straight to the real writer, and
// after ServeHTTP returned (done) none reaches it. A call that races with
// the return itself breaks http.Handler's contract (a ResponseWriter may
// not be used once ServeHTTP returned) and is a data race in the caller;
// the 1xx that other goroutines legitimately send (reverse_proxy's
// Got1xxResponse) go through stateMu.

// Header returns the map the next handler writes its fields into: until
// the final status a map of its own (fields.go), then the real one. Once
// the handler has returned, a goroutine that kept the writer gets a map of
// its own again: the real one is net/http's (it reads trailers from it),
// and another response's after the connection moved on.
func (w *interimWriter) Header() http.Header {
	if h := w.headerNow(w.state.load()); h != nil {
		return h
	}
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	// Committed meanwhile by another goroutine, or a 1xx moved the fields
	// to held.
	if h := w.headerNow(w.state.load()); h != nil {
		return h
	}
	return w.handOutLocked()
}

// headerNow is the map Header returns in state s, or nil when the next
// handler's fields must first move to a map of its own. held is written
// before the state says fieldsHeld and never replaced after.
func (w *interimWriter) headerNow(s requestState) http.Header {
	switch s.phase() {
	case phaseCommitted, phaseHijacked:
		return w.realHeader
	case phaseDone:
		return http.Header{}
	}
	if s.fields() == fieldsHeld {
		return w.held
	}
	return nil
}

// WriteHeader passes a 1xx through and commits any other status. After the
// handler returned it does nothing: net/http's HTTP/2 server panics on a late
// WriteHeader, and its HTTP/1.1 writer may serve another request by then.
func (w *interimWriter) WriteHeader(code int) {
	switch w.state.load().phase() {
	case phaseCommitted, phaseHijacked:
		w.rw.WriteHeader(code) // Go logs the superfluous call
		return
	case phaseDone:
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
// next handler has set, and restarts the 102 schedule. It may be called from
// a goroutine other than the request's (reverse_proxy's Got1xxResponse).
func (w *interimWriter) forwardInterim(code int) {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	s := w.state.load()
	if s.phase() > phaseWaiting {
		return
	}
	switch s.fields() {
	case fieldsStashed:
		w.stash.copyTo(w.realHeader)
	case fieldsHeld:
		for k, v := range w.held {
			w.realHeader[k] = v
		}
	}
	w.noteProgressLocked() // progress.go: later 102s carry its Progress
	w.writeInterimLocked(w.rw, code)
	if s.phase() == phaseWaiting {
		w.scheduleLocked(monoClock{}.now() + w.h.interval)
	}
}

// commit ends the 102s and writes the final status with the next handler's
// header fields. The fire the wheel may still hold for this request finds
// the state committed and drops itself; stop takes it off the wheel.
//
// The final status is written from this small frame, after claimCommit's
// has gone: net/http's WriteHeader clones the header map on the request's
// goroutine, and on HTTP/1.1 that path is the deepest a request goes:
// a deeper call there can make the runtime double the request goroutine's
// stack by copying it.
func (w *interimWriter) commit(code int) {
	if w.claimCommit() {
		w.rw.WriteHeader(code)
	}
}

// claimCommit moves the state to committed and the next handler's fields
// into the real header map, and says whether the caller writes the status.
// Committed meanwhile by another goroutine, it still does (Go logs the
// superfluous call), unless the handler returned: nothing reaches rw then.
func (w *interimWriter) claimCommit() bool {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	if p := w.state.load().phase(); p > phaseWaiting {
		return p != phaseDone
	}
	w.restoreLocked()
	w.state.storeLocked(w.state.load().withPhase(phaseCommitted))
	return true
}

// Write commits an implicit 200 explicitly, so that Caddy's access log and
// metrics, which saw the 102s go by, record the real final status.
func (w *interimWriter) Write(p []byte) (int, error) {
	if err := w.beforeBody(); err != nil {
		return 0, err
	}
	return w.rw.Write(p)
}

// beforeBody commits an implicit 200 unless a final status is written, and
// refuses once the handler returned.
func (w *interimWriter) beforeBody() error {
	switch w.state.load().phase() {
	case phaseDone:
		return errHandlerReturned
	case phaseCommitted, phaseHijacked:
	default:
		w.commit(http.StatusOK)
	}
	return nil
}

// ReadFrom keeps file_server's sendfile path.
func (w *interimWriter) ReadFrom(src io.Reader) (int64, error) {
	if err := w.beforeBody(); err != nil {
		return 0, err
	}
	if rf, ok := w.rw.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{w.rw}, src)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *interimWriter) FlushError() error {
	if err := w.beforeBody(); err != nil {
		return err
	}
	return http.NewResponseController(w.rw).Flush()
}

// Flush implements http.Flusher.
func (w *interimWriter) Flush() {
	_ = w.FlushError()
}

// Hijack ends the 102s once the connection is taken. The lock is held
// across the hijack so that no 102 is written to the connection meanwhile.
func (w *interimWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	s := w.state.load()
	if s.phase() == phaseDone {
		return nil, nil, errHandlerReturned
	}
	conn, brw, err := http.NewResponseController(w.rw).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.state.storeLocked(s.withPhase(phaseHijacked))
	return conn, brw, nil
}

// Push implements http.Pusher when the underlying writer does.
func (w *interimWriter) Push(target string, opts *http.PushOptions) error {
	if w.state.load().phase() == phaseDone {
		return errHandlerReturned
	}
	if p, ok := w.rw.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

// Unwrap lets http.ResponseController reach the connection's deadlines and
// full-duplex setting. After the handler returned it leads nowhere, for the
// same reason as WriteHeader.
func (w *interimWriter) Unwrap() http.ResponseWriter {
	if w.state.load().phase() == phaseDone {
		return endedWriter{}
	}
	return w.rw
}

// errHandlerReturned answers a write through the writer after the handler
// returned.
var errHandlerReturned = errors.New("processing: response used after its handler returned")

// endedWriter is what Unwrap gives once the handler returned: a writer that
// reaches no connection.
type endedWriter struct{}

func (endedWriter) Header() http.Header       { return http.Header{} }
func (endedWriter) Write([]byte) (int, error) { return 0, errHandlerReturned }
func (endedWriter) WriteHeader(int)           {}

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
