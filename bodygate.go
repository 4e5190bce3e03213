package processing

import (
	"io"
	"net/http"

	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"golang.org/x/net/http/httpguts"
)

// The body gate. RFC 2518 §10.1: a 102 says the server has accepted the
// complete request. While the request body is still arriving a 102 would
// say otherwise, and some clients do not even read responses while they
// upload: neon (cadaver, davfs2) counts the 1xx it finds afterwards against
// a limit (https://github.com/notroj/neon/issues/94). So a request with a
// body starts in phaseReceiving, and its first 102 goes out at the later of
// its due time and the end of the body, as the next handler reads it: the
// read that returns io.EOF, or the one that brings the count of bytes to
// Content-Length. A next handler that stops reading part way has the
// client still sending; that request gets no 102 at all.
//
// HTTP/1.1 with Expect: 100-continue: Go writes the automatic 100 Continue
// from the body reader, without the lock a 1xx takes, so it could
// interleave with a 1xx that reverse_proxy forwards from its transport's
// goroutine. The module writes the 100 itself under stateMu on the first
// read, which turns Go's off (RFC 9110 §10.1.1).
//
// HTTP/2 drops the automatic 100 once any HEADERS frame went out, and hides
// Expect from the handler: no 102 goes out before the body is in, so none
// comes before the 100 that x/net writes on the first read.

// gateBody wraps r.Body when the request has a body still to arrive, and
// returns the state the request starts in. It runs before the writer is
// shared.
func (w *interimWriter) gateBody(r *http.Request) requestState {
	if !hasBody(r) {
		return phaseWaiting
	}
	initial := phaseReceiving
	if r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
		initial |= expectsContinue
	}
	// The wrapper stays in r.Body after ServeHTTP returned (finish does
	// not write r again): a transport may read it late (the
	// http.RoundTripper contract allows it), and then it only passes
	// through.
	r.Body = &gatedBody{ReadCloser: r.Body, w: w, remaining: r.ContentLength}
	return initial
}

// hasBody reports whether r has a request body still to arrive. Go's
// HTTP/1.1 server gives a request without Content-Length or chunked
// framing http.NoBody, and x/net's HTTP/2 server Content-Length 0 when the
// HEADERS frame ended the stream. quic-go's HTTP/3 server cannot tell
// (its clients need not send content-length, RFC 9114 §4.1): a request
// of unknown length counts as having a body unless its method defines no
// request content, or the gate would hold the 102s of every GET whose
// handler never reads its (empty) body.
func hasBody(r *http.Request) bool {
	switch {
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		return false
	case r.ContentLength > 0 || r.ProtoMajor < 3:
		return true
	}
	switch r.Method {
	// RFC 9110 §9.3: content in a GET, HEAD, DELETE or CONNECT request has
	// no generally defined semantics, and a TRACE request has none.
	// RFC 4918 §9.8, §9.9, §9.11: COPY, MOVE and UNLOCK define no request
	// body.
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodConnect, http.MethodTrace,
		"COPY", "MOVE", "UNLOCK":
		return false
	}
	return true
}

// gatedBody is the request body the next handler reads while the request
// is receiving; it tells the writer of the module's 100 Continue and of the
// end of the body. Like any request body it is read by one goroutine at a
// time, which may not be the request's (Go's Transport reads it on its own
// goroutine, also after RoundTrip returned).
type gatedBody struct {
	io.ReadCloser
	w *interimWriter
	// remaining is how many bytes of a body of known length are still to
	// come; -1 when the length is unknown.
	remaining int64
}

func (b *gatedBody) Read(p []byte) (int, error) {
	s := b.w.state.load()
	if s.phase() != phaseReceiving {
		// In, committed, hijacked, or a late read once the handler
		// returned: only the body's own reader is involved.
		return b.ReadCloser.Read(p)
	}
	if s&expectsContinue != 0 {
		b.w.writeContinue()
	}
	n, err := b.ReadCloser.Read(p)
	if b.remaining > 0 {
		b.remaining -= int64(n)
	}
	if err == io.EOF || b.remaining == 0 {
		b.w.bodyIn()
	}
	return n, err
}

// writeContinue writes the 100 Continue an HTTP/1.1 client waits for, on
// the first read of the body.
func (w *interimWriter) writeContinue() {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	s := w.state.load()
	if s.phase() != phaseReceiving || s&expectsContinue == 0 {
		return
	}
	// The automatic 100 carries no fields; Go writes the real map on a
	// 1xx, so it must be empty.
	w.vacateLocked()
	w.writeInterimLocked(caddyutil.Innermost(w.rw), http.StatusContinue)
	w.state.storeLocked(w.state.load() &^ expectsContinue)
}

// bodyIn ends phaseReceiving: the whole request is in. A 102 that fell due
// meanwhile, or that the client asked to get at once, goes out now, from
// the goroutine reading the body: a handler that answers right after it
// read the body (x/net/webdav's LOCK) would otherwise answer before the
// next tick.
func (w *interimWriter) bodyIn() {
	w.stateMu.Lock()
	defer w.stateMu.Unlock()
	s := w.state.load()
	if s.phase() != phaseReceiving {
		return
	}
	w.state.storeLocked(s.withPhase(phaseWaiting) &^ (due | expectsContinue))
	if s&due != 0 {
		now := monoClock{}.now()
		w.sendInterimLocked(now, false)
		w.scheduleLocked(now + w.h.interval)
	}
}
