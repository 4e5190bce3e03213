package processing

import (
	"io"
	"net/http"

	"golang.org/x/net/http/httpguts"
)

// The 100-continue gate. RFC 2518 §10.1: a 102 says the server has the
// whole request. With Expect: 100-continue the client is still waiting to
// send its body, so 102s wait for the next handler's first read of the body.
//
// HTTP/1.1: Go writes the automatic 100 Continue from the body reader,
// without the lock a 1xx takes, so it could interleave with a 102 or a 1xx
// that reverse_proxy forwards from its transport's goroutine. The module
// writes the 100 itself under mu on that first read, which turns Go's off
// (RFC 9110 §10.1.1).
//
// HTTP/2 drops the automatic 100 once any HEADERS frame went out, and hides
// Expect from the handler: for every HTTP/2 request with a body, 102s wait
// until the first body read has returned, by which time the 100, if the
// client asked for one, is on the wire.

// gateBody wraps r.Body when 102s must wait for its first read, and puts
// the request in stateAwaitingBody. It runs before the writer is shared.
func (w *interimWriter) gateBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	var gate *gatedBody
	switch {
	case r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue"):
		gate = &gatedBody{ReadCloser: r.Body, w: w, sendContinue: true}
	case w.http2 && r.ContentLength != 0:
		gate = &gatedBody{ReadCloser: r.Body, w: w}
	default:
		return
	}
	// The wrapper stays in r.Body after ServeHTTP returned (finish does
	// not write r again): a transport may read it late, and then it only
	// passes through.
	r.Body = gate
	w.setStateLocked(stateAwaitingBody)
}

// gatedBody opens the 102 gate on the first read of the request body:
// before it, with the module's own 100 Continue (HTTP/1.1), or after it has
// returned (HTTP/2). It is read by one goroutine at a time, as any body.
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

// openGate ends stateAwaitingBody. On a writer that is done (a transport
// reading the body after the handler returned) it does nothing: Go's own
// 100 Continue logic has been settled by then.
func (w *interimWriter) openGate(sendContinue bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateAwaitingBody && w.state != stateDueAwaitingBody {
		return // after the final status Go's own 100 Continue logic takes over
	}
	if sendContinue {
		// The automatic 100 carries no fields; Go writes the real map on
		// a 1xx, so it must be empty.
		w.vacateLocked()
		w.writeInterimLocked(innermost(w.rw), http.StatusContinue)
	}
	overdue := w.state == stateDueAwaitingBody
	w.setStateLocked(stateWaiting)
	if overdue {
		w.scheduleLocked(monoClock{}.now())
	}
}
