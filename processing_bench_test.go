package processing

// Benchmarks: what the module adds to a request that finishes
// before its first 102 (the fast path every request takes), and what one
// 102 costs. Each benchmark has a "without" twin that runs the same chain
// with the module taken out, so that benchstat compares the two directly:
//
//	go test -run '^$' -bench 'FastPath' -benchmem -count 10 . > bench.txt
//	benchstat -col /module bench.txt

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// benchWriter behaves like net/http's HTTP/1.1 response writer where the
// module can tell the difference: a 1xx writes the status line and the
// whole live header map and flushes at once, and may repeat; the final
// status writes the header map once; a later WriteHeader is ignored.
// httptest.ResponseRecorder would instead take a 102 as the final status.
type benchWriter struct {
	header    http.Header
	bw        *bufio.Writer
	final     int
	interims  int
	onInterim func() // called at the first 1xx
	// For BenchmarkLateFiresReachNoOtherRequest: the request began at start, and
	// done is set once its ServeHTTP has returned. A 1xx after done, or
	// sooner than earliest after start, belongs to another request.
	start    time.Time
	earliest time.Duration
	done     atomic.Bool
}

// foreignInterims counts 1xx that reached a benchWriter outside its own
// request's schedule.
var foreignInterims, lateInterims atomic.Int64

func newBenchWriter() *benchWriter {
	return &benchWriter{header: make(http.Header), bw: bufio.NewWriterSize(io.Discard, 4096)}
}

// reset makes the writer ready for the next request, as net/http does with
// a fresh response and an empty header map.
func (w *benchWriter) reset() {
	clear(w.header)
	w.bw.Reset(io.Discard)
	w.final, w.interims = 0, 0
	w.done.Store(false)
}

func (w *benchWriter) Header() http.Header { return w.header }

func (w *benchWriter) WriteHeader(code int) {
	interim := code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols
	if interim && w.done.Load() {
		foreignInterims.Add(1)
		lateInterims.Add(1)
		return
	}
	if interim && w.earliest > 0 && time.Since(w.start) < w.earliest {
		foreignInterims.Add(1)
		return
	}
	if w.final != 0 {
		return
	}
	w.writeStatus(code)
	if interim {
		w.interims++
		if w.interims == 1 && w.onInterim != nil {
			w.onInterim()
		}
		_ = w.bw.Flush()
		return
	}
	w.final = code
}

func (w *benchWriter) writeStatus(code int) {
	var num [3]byte
	_, _ = w.bw.WriteString("HTTP/1.1 ")
	_, _ = w.bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	_, _ = w.bw.WriteString(" \r\n")
	_ = w.header.Write(w.bw)
	_, _ = w.bw.WriteString("\r\n")
}

// SetReadDeadline and SetWriteDeadline succeed, as on a real connection:
// Caddy's server sets both on every request through
// http.ResponseController, and an unsupported one takes its error path.
func (w *benchWriter) SetReadDeadline(time.Time) error  { return nil }
func (w *benchWriter) SetWriteDeadline(time.Time) error { return nil }

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.final == 0 {
		w.WriteHeader(http.StatusOK)
	}
	return w.bw.Write(p)
}

// benchHandler is a provisioned Handler whose logger is off, as Caddy's
// default INFO level leaves the module's debug logs off.
func benchHandler(b *testing.B, cfg Handler) *Handler {
	b.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	h := &cfg
	if err := h.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		b.Fatal(err)
	}
	h.logger = zap.NewNop()
	return h
}

// staticNext is the `respond "hello"` of a Caddyfile: Caddy's own
// static_response handler.
func staticNext() caddyhttp.Handler {
	sr := caddyhttp.StaticResponse{Body: "hello"}
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return sr.ServeHTTP(w, r, nil)
	})
}

// benchRequest is an HTTP/1.1 GET carrying the replacer, which
// static_response needs, and the variable table that Caddy's server puts on
// every request, where the module records its count.
func benchRequest(header ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	r.Body = http.NoBody
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer())
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{"start_time": time.Now()})
	return r.WithContext(ctx)
}

// BenchmarkFastPathHandler is the fast path at the handler: the module's
// ServeHTTP around static_response, for a request that ends long before
// its first 102 is due, against static_response called directly, and
// against Caddy's own `headers` handler with a deferred operation (the
// Caddyfile's `header >X-Frame-Options DENY`), which wraps the writer
// as the module does: the yardstick for what a writer wrapper may cost.
func BenchmarkFastPathHandler(b *testing.B) {
	next := staticNext()
	h := benchHandler(b, Handler{Interval: caddy.Duration(20 * time.Second)})
	headers := caddyHandler(b, "http.handlers.headers", `{"response": {"set": {"X-Frame-Options": ["DENY"]}, "deferred": true}}`)
	r := benchRequest()
	w := newBenchWriter()
	b.Run("module=without", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			if err := next.ServeHTTP(w, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("module=headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			if err := headers.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
		}
		if w.final != http.StatusOK || w.header.Get("X-Frame-Options") != "DENY" {
			b.Fatalf("headers wrote final %d with %v", w.final, w.header)
		}
	})
	b.Run("module=with", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset()
			if err := h.ServeHTTP(w, r, next); err != nil {
				b.Fatal(err)
			}
		}
		if w.interims != 0 || w.final != http.StatusOK {
			b.Fatalf("fast path wrote %d interims and final %d", w.interims, w.final)
		}
	})
}

// caddyHandler loads the middleware module id with its JSON config through
// Caddy's module registry, provisioned as a config load does.
func caddyHandler(b *testing.B, id, config string) caddyhttp.MiddlewareHandler {
	b.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	b.Cleanup(cancel)
	mod, err := ctx.LoadModuleByID(id, json.RawMessage(config))
	if err != nil {
		b.Fatal(err)
	}
	return mod.(caddyhttp.MiddlewareHandler)
}

// BenchmarkFastPathFloor is the least that any design with the module's
// header isolation adds to the fast path of BenchmarkFastPathHandler, when
// it keeps to one rule: every object handed to the next handler is its own
// and never reused, so that a goroutine that kept one reaches no other
// request. That is the writer itself, and, since
// static_response asks for its header map, a map of the handler's own:
// the field Caddy's server set moves there, the handler's field goes into
// the fresh map rather than the real one, and both move back at the final
// status. Nothing else of the module runs.
func BenchmarkFastPathFloor(b *testing.B) {
	real := http.Header{"Server": {"Caddy"}}
	var sink *interimWriter
	b.Run("module=without", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			real["Content-Type"] = []string{"text/plain; charset=utf-8"}
			delete(real, "Content-Type")
		}
	})
	b.Run("module=with", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w := &interimWriter{realHeader: real}
			w.held = make(http.Header, len(real)+4)
			moveHeader(w.held, real)
			w.held["Content-Type"] = []string{"text/plain; charset=utf-8"}
			moveHeader(real, w.held)
			delete(real, "Content-Type")
			sink = w
		}
	})
	_ = sink
}

// BenchmarkFastPathServer is the fast path through Caddy's whole server handler,
// built by loading a Caddyfile: two servers that differ only in the
// `processing` line, each driven through (*caddyhttp.Server).ServeHTTP
// with the same writer and request, so nothing but the module differs.
func BenchmarkFastPathServer(b *testing.B) {
	port := harness.FreePort(b)
	sites := `
http://127.0.0.1:{PORT} {
	processing 20s
	respond "hello"
}
http://127.0.0.1:{OTHERPORT} {
	respond "hello"
}
`
	sites = strings.ReplaceAll(sites, "{OTHERPORT}", strconv.Itoa(port))
	withPort, _ := harness.StartCaddy(b, sites)
	with, without := serverOn(b, withPort), serverOn(b, port)

	run := func(srv *caddyhttp.Server) func(*testing.B) {
		return func(b *testing.B) {
			r := benchRequest()
			w := newBenchWriter()
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				srv.ServeHTTP(w, r)
			}
			if w.final != http.StatusOK || w.interims != 0 {
				b.Fatalf("got final %d after %d interims", w.final, w.interims)
			}
		}
	}
	b.Run("module=without", run(without))
	b.Run("module=with", run(with))
}

// serverOn finds the loaded Caddy HTTP server that listens on port.
func serverOn(b *testing.B, port int) *caddyhttp.Server {
	b.Helper()
	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		b.Fatal(err)
	}
	suffix := ":" + strconv.Itoa(port)
	for _, srv := range app.(*caddyhttp.App).Servers {
		for _, l := range srv.Listen {
			if strings.HasSuffix(l, suffix) {
				return srv
			}
		}
	}
	b.Fatalf("no server listens on %d", port)
	return nil
}

// BenchmarkInterim is the module's cost of one 102 sent on the request's
// goroutine: `Prefer: processing` makes the first 102 go out at once, so
// each iteration is one fast-path request plus one 102 (with a header
// field filled in per 102) written through a writer that formats and
// flushes it like net/http does. The "without" twin is the same request
// without the preference, so the difference is the 102 alone.
func BenchmarkInterim(b *testing.B) {
	next := staticNext()
	h := benchHandler(b, Handler{
		Interval: caddy.Duration(20 * time.Second),
		Header:   http.Header{"Progress": {"{http.processing.count}"}},
	})
	w := newBenchWriter()
	for _, tc := range []struct {
		name    string
		r       *http.Request
		interim int
	}{
		{"interim=0", benchRequest(), 0},
		{"interim=1", benchRequest("Prefer", "processing"), 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				w.reset()
				if err := h.ServeHTTP(w, tc.r, next); err != nil {
					b.Fatal(err)
				}
			}
			if w.interims != tc.interim || w.final != http.StatusOK {
				b.Fatalf("wrote %d interims and final %d, want %d and 200", w.interims, w.final, tc.interim)
			}
		})
	}
}

// BenchmarkLateFiresReachNoOtherRequest runs requests whose ServeHTTP ends
// just as their 102 falls due, on every core, so that the wheel's fires
// race with the ends of requests. A 102 that reaches a request's writer
// after its ServeHTTP returned, or before its delay, fails the benchmark.
func BenchmarkLateFiresReachNoOtherRequest(b *testing.B) {
	const delay = 20 * time.Microsecond
	h := benchHandler(b, Handler{Interval: caddy.Duration(delay)})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		// Work from half to twice the delay, so that the timer
		// and the end of the request race, either one first.
		// Yielding lets the timer's goroutine run on a busy machine.
		work := delay/2 + rand.N(3*delay/2)
		for start := time.Now(); time.Since(start) < work; {
			runtime.Gosched()
		}
		_, err := io.WriteString(w, "hello")
		return err
	})
	var interims atomic.Int64
	foreignInterims.Store(0)
	lateInterims.Store(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// A fresh request per request, as Caddy's server
			// makes one: the module counts delay from its
			// start_time variable.
			r := benchRequest()
			// A fresh writer per request: a late fire would find
			// it marked done, or the next request's too early.
			w := newBenchWriter()
			w.start, w.earliest = time.Now(), delay
			if err := h.ServeHTTP(w, r, next); err != nil {
				panic(err)
			}
			w.done.Store(true)
			interims.Add(int64(w.interims))
		}
	})
	// Give any stray fire time to land before checking.
	time.Sleep(10 * time.Millisecond)
	if n := foreignInterims.Load(); n != 0 {
		b.Fatalf("%d 102s reached a writer outside its request (%d after it ended)", n, lateInterims.Load())
	}
	b.ReportMetric(float64(interims.Load())/float64(b.N), "interims/op")
}

// BenchmarkInFlightMemory is the module's own share of a waiting request's
// memory, which must stay within 256 bytes: the heap
// that requests hold while they are in flight, each past its first 102,
// with the module and without. Each op is one in-flight request; the
// figure is "heap-B/inflight", from the live heap after a full GC with
// every request of the op's batch waiting in its next handler.
// Goroutine stacks are left out: the same goroutines run either way (the
// module adds a few frames to each).
func BenchmarkInFlightMemory(b *testing.B) {
	const batch = 2000
	for _, with := range []bool{false, true} {
		name := "module=without"
		if with {
			name = "module=with"
		}
		b.Run(name, func(b *testing.B) {
			// The first 102 after a millisecond, then none for the
			// length of the benchmark.
			h := benchHandler(b, Handler{Delay: caddy.Duration(time.Millisecond), Interval: caddy.Duration(time.Hour)})
			var total float64
			for done := 0; done < b.N; done += batch {
				total += inFlightHeap(b, h, with, batch)
			}
			b.ReportMetric(total/float64((b.N+batch-1)/batch), "heap-B/inflight")
		})
	}
}

// inFlightHeap starts n requests that each wait, after their first 102
// if with, and returns the live heap they add per request.
func inFlightHeap(b *testing.B, h *Handler, with bool, n int) float64 {
	release := make(chan struct{})
	var waiting, interims sync.WaitGroup
	waiting.Add(n)
	interims.Add(n)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if !with {
			interims.Done() // no 102 to wait for
		}
		waiting.Done()
		<-release
		_, err := io.WriteString(w, "done")
		return err
	})
	writers := make([]*benchWriter, n)
	for i := range writers {
		writers[i] = newBenchWriter()
		writers[i].onInterim = interims.Done
	}
	var finished sync.WaitGroup
	before := liveHeap()
	for i := range n {
		finished.Go(func() {
			r := benchRequest()
			if with {
				_ = h.ServeHTTP(writers[i], r, next)
			} else {
				_ = next.ServeHTTP(writers[i], r)
			}
			// A server keeps the request until its handler returned
			// (net/http's conn.serve holds it). Without this, the
			// request could be collected while it waits without the
			// module, whose writer keeps it, and its ~1 KB would
			// count as the module's.
			runtime.KeepAlive(r)
		})
	}
	waiting.Wait()
	interims.Wait()
	after := liveHeap()
	close(release)
	finished.Wait()
	return float64(after-before) / float64(n)
}

// liveHeap is the heap in use by live objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
