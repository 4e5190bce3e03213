package main

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// floorHandler is the fast-path floor in a whole server: the least that
// any handler giving each request objects of its own adds
// to a request that ends before its first 102. Every object it hands the
// next handler belongs to the one request and is never reused (a goroutine
// that kept one must reach no other request), and the next handler gets a
// header map of its own (Go's servers copy the live map into every 1xx
// from another goroutine). So: one writer per request, and, once the next
// handler asks for its map, a fresh map that the fields Caddy's server set
// move into, and out of again at the final status. No clock, no lock, no
// scheduling: it sends no 102, so it is a lower bound, not a design.
// BenchmarkFastPathFloor measures the same work in-process; this is the
// whole-server figure (-rps-sides floor).
type floorHandler struct{}

func init() {
	caddy.RegisterModule(new(floorHandler))
	httpcaddyfile.RegisterHandlerDirective("loadtest_floor", func(httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		return new(floorHandler), nil
	})
	httpcaddyfile.RegisterDirectiveOrder("loadtest_floor", httpcaddyfile.Before, "header")
}

func (*floorHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.loadtest_floor",
		New: func() caddy.Module { return new(floorHandler) },
	}
}

func (*floorHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	fw := &floorWriter{rw: w, real: w.Header()}
	err := next.ServeHTTP(fw, r)
	fw.restore()
	return err
}

// floorWriter keeps the next handler's fields in held until the final
// status.
type floorWriter struct {
	rw   http.ResponseWriter
	real http.Header
	held http.Header
	done bool // the final status is written
}

func (w *floorWriter) Header() http.Header {
	if w.done {
		return w.real
	}
	if w.held == nil {
		w.held = make(http.Header, len(w.real)+4)
		moveFields(w.held, w.real)
	}
	return w.held
}

func (w *floorWriter) restore() {
	if !w.done && w.held != nil {
		moveFields(w.real, w.held)
	}
	w.done = true
}

func (w *floorWriter) WriteHeader(code int) {
	w.restore()
	w.rw.WriteHeader(code)
}

func (w *floorWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.rw.Write(p)
}

// Unwrap lets Caddy's server reach the connection's deadlines through
// http.ResponseController, as the module's writer does.
func (w *floorWriter) Unwrap() http.ResponseWriter { return w.rw }

func moveFields(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
	clear(src)
}
