package processing

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Header isolation. Go's servers put the whole live header map on every 1xx
// (net/http writes it for HTTP/1.1, x/net encodes it for HTTP/2, quic-go for
// HTTP/3), so while 102s may go out the real map must hold nothing but the
// 102's own fields, and the next handler's fields must live elsewhere.

// The next handler's fields move between three places before the final
// status: the real map, the writer's inline stash, and held, the map of
// the handler's own; the state records which (requestState, fieldsInReal
// and on). Each move is made under stateMu, or on the request's goroutine
// once the phase is done.

// vacateLocked moves the response's header fields out of the real map, for
// a 1xx that must carry other fields: into held if this writer has a map,
// or into the stash if they fit (the usual Server and Alt-Svc). A request
// waiting on reverse_proxy or webdav has not asked for its header map yet,
// and then needs no map of its own while it waits.
func (w *interimWriter) vacateLocked() {
	s := w.state.load()
	if s.fields() != fieldsInReal {
		return
	}
	if w.stash.take(w.realHeader) {
		w.state.storeLocked(s.withFields(fieldsStashed))
		return
	}
	w.held = make(http.Header, len(w.realHeader))
	moveHeader(w.held, w.realHeader)
	w.state.storeLocked(s.withFields(fieldsHeld))
}

// handOutLocked returns the map for the next handler before the final
// status, moving its fields there.
func (w *interimWriter) handOutLocked() http.Header {
	s := w.state.load()
	switch s.fields() {
	case fieldsInReal:
		w.held = make(http.Header, len(w.realHeader)+4)
		moveHeader(w.held, w.realHeader)
	case fieldsStashed:
		w.held = make(http.Header, len(w.stash.values)+4)
		w.stash.moveTo(w.held)
	}
	w.state.storeLocked(s.withFields(fieldsHeld))
	return w.held
}

// restoreLocked moves the response's header fields back into the real map.
func (w *interimWriter) restoreLocked() {
	s := w.state.load()
	switch s.fields() {
	case fieldsStashed:
		w.stash.moveTo(w.realHeader)
	case fieldsHeld:
		moveHeader(w.realHeader, w.held)
	}
	w.state.storeLocked(s.withFields(fieldsInReal))
}

// writeInterimLocked writes a 1xx carrying what realHeader holds, and
// empties realHeader again if the response's fields live elsewhere.
//
// x/net/http2 queues a 1xx HEADERS frame for its frame writer goroutine
// with the live map, and WriteHeader can return before that goroutine has
// encoded it: when the stream is reset or the connection closes. Writing to
// the map afterwards would then race with the encoder. When the map holds
// Transfer-Encoding, though, WriteHeader hands the frame writer a private
// clone without that field, so realHeader is ours again however
// WriteHeader returned. HTTP/1.1 and HTTP/3 write 1xx synchronously.
func (w *interimWriter) writeInterimLocked(to http.ResponseWriter, code int) {
	if w.req.ProtoMajor == 2 {
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
	s := w.state.load()
	w.state.storeLocked(s | interimSent)
	if s.fields() != fieldsInReal {
		clear(w.realHeader)
	}
}

// forceHeaderClone is the Transfer-Encoding value that makes HTTP/2 clone
// the header map for a 1xx (see writeInterimLocked).
var forceHeaderClone = []string{"chunked"}

// fieldStash holds the header fields of a request whose real map was
// emptied for a 102 before the next handler asked for a map, when they are
// only those Caddy's server sets before any handler (stashable): Server,
// and Alt-Svc with HTTP/3, each with one value. A field is kept at the
// index of its name, as a pointer to its value's backing array: 8 bytes
// instead of the 40 of a name and a slice, in a struct every waiting
// request carries (the module's heap per waiting request is bounded at
// 256 bytes, BenchmarkInFlightMemory). Any other field
// makes the request take a map of its own instead.
type fieldStash struct {
	values [len(stashable)]*[1]string // nil where unused
}

// stashable are the names a fieldStash holds, in canonical form, as
// Caddy's server sets them (caddyhttp.Server.ServeHTTP).
var stashable = [...]string{"Server", "Alt-Svc"}

// take moves every field of h into the stash if they fit.
func (s *fieldStash) take(h http.Header) bool {
	for k, v := range h {
		if len(v) != 1 || stashIndex(k) < 0 {
			return false
		}
	}
	for k, v := range h {
		s.values[stashIndex(k)] = (*[1]string)(v)
	}
	clear(h)
	return true
}

// stashIndex is the index of name in stashable, or -1.
func stashIndex(name string) int {
	for i, n := range stashable {
		if n == name {
			return i
		}
	}
	return -1
}

// copyTo adds the stashed fields to h. A value comes back as a slice of
// length and capacity 1 over the same array; an append to it copies.
func (s *fieldStash) copyTo(h http.Header) {
	for i, v := range s.values {
		if v != nil {
			h[stashable[i]] = v[:]
		}
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
// runs on the request's goroutine: the replacer is not safe from another.
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
