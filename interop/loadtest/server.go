package main

// The server side: Caddy run in this process from a Caddyfile, with a
// handler of the load program's own standing in for slow downstream work.

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	_ "github.com/c055b0d7/caddy-processing"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func init() {
	caddy.RegisterModule(hold{})
	httpcaddyfile.RegisterHandlerDirective("loadtest_hold", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		if !h.NextArg() {
			return nil, h.ArgErr()
		}
		d, err := caddy.ParseDuration(h.Val())
		if err != nil {
			return nil, h.Errf("loadtest_hold: %v", err)
		}
		return &hold{Duration: caddy.Duration(d)}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("loadtest_hold", httpcaddyfile.Before, "respond")

	caddy.RegisterModule(endless{})
	httpcaddyfile.RegisterHandlerDirective("loadtest_endless", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		if h.NextArg() {
			return nil, h.ArgErr()
		}
		return endless{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("loadtest_endless", httpcaddyfile.Before, "respond")
}

// hold is a long request: it answers 200 "done" after Duration, or gives
// up when the client goes.
type hold struct {
	Duration caddy.Duration `json:"duration"`
}

func (hold) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.loadtest_hold", New: func() caddy.Module { return new(hold) }}
}

func (h hold) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	t := time.NewTimer(time.Duration(h.Duration))
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", "4")
	_, err := w.Write([]byte("done"))
	return err
}

// endless is a download that never ends: it writes zeros until the client
// goes. The stall test's HTTP/2 stallers never read it (stall.go).
type endless struct{}

func (endless) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.loadtest_endless", New: func() caddy.Module { return new(endless) }}
}

func (endless) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Content-Type", "application/octet-stream")
	buf := make([]byte, 32<<10)
	for r.Context().Err() == nil {
		if _, err := w.Write(buf); err != nil {
			return nil // the client went
		}
	}
	return nil
}

// loadCaddy replaces the running Caddy config with the given site blocks,
// behind global options that keep Caddy off the network and quiet.
func loadCaddy(sites string) error {
	dir, err := os.MkdirTemp("", "loadtest-caddy-")
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	log {
		level ERROR
	}
	servers {
		protocols h1 h2c
	}
}
%s`, dir, sites)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting Caddyfile: %v\n%s", err, text)
	}
	return caddy.Load(cfg, true)
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeCalls is how many write system calls this process has made so far
// (syscw in /proc/self/io; 0 where there is none): how many 102s share a
// write on HTTP/2, where x/net flushes only when its queue is empty.
func writeCalls() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the CPU (user plus system) this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memSample is the memory the process holds for live data after a full GC:
// the live heap plus goroutine stacks, which is where a request's cost
// shows (a goroutine per request would show in stacks).
type memSample struct {
	HeapLive   uint64 `json:"heap_live_bytes"`
	Stacks     uint64 `json:"stacks_bytes"`
	Goroutines uint64 `json:"goroutines"`
	// StackScanned is the stack in use that the last GC scanned: every
	// goroutine's stack from its top to where it waits.
	StackScanned uint64 `json:"stack_scanned_bytes"`
	// StackStart is the size the runtime gives a new goroutine's stack:
	// since Go 1.19 the mean stack in use that the last GC scanned, plus
	// the stack guard, rounded up to a power of two.
	StackStart uint64 `json:"stack_start_bytes"`
}

func (m memSample) total() uint64 { return m.HeapLive + m.Stacks }

func sampleMemory() memSample {
	// Two cycles: the first leaves sync.Pool's victim cache, the second
	// frees it, so pooled objects of an earlier run do not count.
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/stack/starting-size:bytes"},
	}
	metrics.Read(s)
	return memSample{
		HeapLive: s[0].Value.Uint64(), Stacks: s[1].Value.Uint64(), Goroutines: s[2].Value.Uint64(),
		StackScanned: s[3].Value.Uint64(), StackStart: s[4].Value.Uint64(),
	}
}
