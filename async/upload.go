package async

// Reading a job's body, and refusing a request so that its client reads the
// answer.
//
// An upload holds no job slot (max_jobs): a slot is taken once the body is
// in, so slow uploads cannot keep every other client out. An upload is
// bounded on its own by upload_timeout, the time from the start of the read
// to its end: a time rather than a minimum rate, because it bounds what one
// connection can hold whatever it sends, and is the same rule as Caddy's
// `timeouts read_body` (Go's ReadTimeout), applied to async requests only.
//
// A request refused before its body is read in full (over max_body by its
// Content-Length or by counting, or at a limit) is answered so that every
// client reads the answer. net/http closes such a connection once the
// response is written, with the client's bytes unread; the kernel then
// resets it, and a client still sending its body (Go's, Python's requests)
// loses the response to the reset (RFC 9112 §9.6 asks a server to read on
// until the client closes). So the rest of the body is read and discarded
// first, up to lingerBytes and lingerTime, as nginx's lingering_close does
// (https://nginx.org/en/docs/http/ngx_http_core_module.html#lingering_close);
// a body that ends within them leaves the connection usable. A client that
// sent `Expect: 100-continue` is waiting to be told to send: it is told no
// at once, with `Connection: close`, and nothing is read.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

// defaultAsyncUploadTimeout is Config.UploadTimeout's default.
const defaultAsyncUploadTimeout = time.Minute

// Bounds of the read-and-discard before a refusal: nginx's lingering_time
// is 30s; the bytes keep a refused client from using the server as a sink.
const (
	lingerTime  = 30 * time.Second
	lingerBytes = 64 << 20
)

// readBody reads the request's body within upload_timeout and up to
// max_body. Its errors are the answers to give, the connection prepared.
func (a *Config) readBody(w http.ResponseWriter, r *http.Request) (*bufferedBody, error) {
	if r.ContentLength > a.MaxBody {
		return nil, refuseUnread(w, r, http.StatusRequestEntityTooLarge,
			fmt.Errorf("async: body of %d bytes passes max_body", r.ContentLength))
	}
	if r.Body == nil || r.Body == http.NoBody {
		return new(bufferedBody), nil
	}
	rc := http.NewResponseController(w)
	// Every server Caddy runs implements read deadlines (net/http's HTTP/1
	// and HTTP/2, quic-go's HTTP/3); Caddy's idle-timeout reader keeps the
	// deadline as a ceiling (caddyhttp/idletimeout.go).
	if err := rc.SetReadDeadline(time.Now().Add(a.uploadTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		a.logger.Debug("setting the upload deadline", zap.Error(err))
	}
	body, err := bufferBody(r, a.MaxBody)
	if err == nil {
		_ = rc.SetReadDeadline(time.Time{})
		return body, nil
	}
	var he caddyhttp.HandlerError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, closeAfter(w, r, http.StatusRequestTimeout,
			fmt.Errorf("async: body not received within upload_timeout (%s)", a.uploadTimeout))
	case errors.As(err, &he) && he.StatusCode == http.StatusRequestEntityTooLarge:
		return nil, refuseUnread(w, r, http.StatusRequestEntityTooLarge, err)
	}
	return nil, closeAfter(w, r, http.StatusBadRequest, err)
}

// refuseAtLimit answers 503 when max_jobs or max_stored is reached.
func (a *Config) refuseAtLimit(w http.ResponseWriter, r *http.Request, why string, unread bool) error {
	asyncOutcomes.WithLabelValues("rejected").Inc()
	a.logger.Debug("async job refused", zap.String("limit", why))
	w.Header().Set("Retry-After", "5")
	err := fmt.Errorf("async: %s reached", why)
	if unread {
		return refuseUnread(w, r, http.StatusServiceUnavailable, err)
	}
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}

// refuseUnread prepares the refusal of a request whose body is not read in
// full, and returns the error that Caddy answers with. HTTP/2 and HTTP/3
// end the stream and keep the connection; nothing to do there.
func refuseUnread(w http.ResponseWriter, r *http.Request, code int, err error) error {
	if r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody {
		return caddyhttp.Error(code, err)
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
		return closeAfter(w, r, code, err)
	}
	rc := http.NewResponseController(w)
	if r.ContentLength <= lingerBytes {
		_ = rc.SetReadDeadline(time.Now().Add(lingerTime))
		n, derr := io.CopyN(io.Discard, r.Body, lingerBytes+1)
		if derr == io.EOF && n <= lingerBytes {
			_ = rc.SetReadDeadline(time.Time{})
			return caddyhttp.Error(code, err) // all read: the connection goes on
		}
	}
	return closeAfter(w, r, code, err)
}

// closeAfter answers with Connection: close and ends the connection at
// once. Without the expired read deadline net/http would first read up to
// 256 KiB more of the body (server.go, body.Close), which a client waiting
// for 100 Continue never sends: the connection would hang until Caddy's
// read timeout. HTTP/2 and HTTP/3 forbid Connection and end the stream.
func closeAfter(w http.ResponseWriter, r *http.Request, code int, err error) error {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	return caddyhttp.Error(code, err)
}
