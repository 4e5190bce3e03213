package processing

// How much deeper the module makes the goroutine stack of a request on the
// path where the response is written. On HTTP/1.1 that path is the deepest
// a request goes (net/http's WriteHeader clones the header map there, and
// Caddy sets a write deadline on every Write), and it comes within a few
// hundred bytes of the 8 KiB stack a request goroutine has by then: every
// byte the module adds beneath it brings closer the copy of the whole
// stack into one of 16 KiB (docs/performance.md, "Stacks").

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"unsafe"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// stackProbe is a middleware that measures, in bytes of stack, how far
// below its own frame the first call into the ResponseWriter it hands on
// (WriteHeader or Write) happens.
type stackProbe struct{}

func (stackProbe) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_stack_probe", New: func() caddy.Module { return new(stackProbe) }}
}

var (
	stackDepthsMu sync.Mutex
	// stackDepths are the probe's measurements by request path; -1 where
	// the goroutine's stack moved during the request, which makes the two
	// addresses incomparable.
	stackDepths = map[string][]int{}
)

func (stackProbe) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// A stack that grows or shrinks is copied elsewhere. Growing it to
	// 64 KiB first keeps it in place unless a GC shrinks it meanwhile,
	// which the second look at top's address detects.
	growStack(48)
	var top byte
	topAt := uintptr(unsafe.Pointer(&top))
	pw := &probeWriter{ResponseWriter: w}
	err := next.ServeHTTP(pw, r)
	depth := int(topAt - pw.at)
	if uintptr(unsafe.Pointer(&top)) != topAt || pw.at == 0 {
		depth = -1
	}
	stackDepthsMu.Lock()
	stackDepths[r.URL.Path] = append(stackDepths[r.URL.Path], depth)
	stackDepthsMu.Unlock()
	return err
}

//go:noinline
func growStack(n int) byte {
	var pad [1024]byte
	pad[n%len(pad)] = byte(n)
	if n == 0 {
		return pad[0]
	}
	return growStack(n-1) + pad[n%len(pad)]
}

// probeWriter notes the stack address of the first call into it.
type probeWriter struct {
	http.ResponseWriter
	at uintptr
}

//go:noinline
func (pw *probeWriter) note() {
	var here byte
	if pw.at == 0 {
		pw.at = uintptr(unsafe.Pointer(&here))
	}
}

func (pw *probeWriter) WriteHeader(code int) {
	pw.note()
	pw.ResponseWriter.WriteHeader(code)
}

func (pw *probeWriter) Write(p []byte) (int, error) {
	pw.note()
	return pw.ResponseWriter.Write(p)
}

func init() {
	caddy.RegisterModule(stackProbe{})
	httpcaddyfile.RegisterHandlerDirective("test_stack_probe", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return stackProbe{}, nil
	})
}

// TestStackDepthOfTheResponsePath bounds the stack the module adds to the
// response path: its own frame and Caddy's two for any middleware while
// next runs, and the writer's on the way to the real WriteHeader, which it
// calls from commit's small frame rather than claimCommit's. Making that
// call from the frame that moves the header fields, as the writer once
// did, adds 216 bytes and fails the bound.
func TestStackDepthOfTheResponsePath(t *testing.T) {
	harness.SetBehaviour(t, "stack_write", harness.WriteAfter(0, "ok"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	route /with {
		test_stack_probe
		processing {
			delay 1m
		}
		test_work stack_write
	}
	route /without {
		test_stack_probe
		test_work stack_write
	}
}
`)
	client := harness.H1Client()
	depthOf := func(path string) int {
		t.Helper()
		for range 20 {
			resp, err := client.Get(fmt.Sprintf("http://%s%s", harness.Loopback(port), path))
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(body) != "ok" {
				t.Fatalf("%s: body %q, %v", path, body, err)
			}
		}
		stackDepthsMu.Lock()
		defer stackDepthsMu.Unlock()
		var valid []int
		for _, d := range stackDepths[path] {
			if d > 0 {
				valid = append(valid, d)
			}
		}
		if len(valid) < 10 {
			t.Fatalf("%s: only %d of %v measured with the stack in place", path, len(valid), stackDepths[path])
		}
		for _, d := range valid {
			if d != valid[0] {
				t.Fatalf("%s: depths differ between identical requests: %v", path, valid)
			}
		}
		return valid[0]
	}
	with, without := depthOf("/with"), depthOf("/without")
	added := with - without
	t.Logf("stack from the probe to the first call into its writer: %d B with the module, %d B without: %+d B", with, without, added)
	if added <= 0 || added > maxResponsePathStack {
		t.Fatalf("the module adds %d B of stack to the response path; want 1 to %d B", added, maxResponsePathStack)
	}
}
