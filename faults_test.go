package processing

// Faults downstream and around the module: a panic or an error after 102s
// still ends in Caddy's own error response (handle_errors); an upgrade
// through reverse_proxy ends the 102s at the 101 and the tunnel carries
// only the peers' bytes; a reload or a stop with long requests in flight
// lets them finish, and no 102 goes out afterwards.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// relProgress numbers each 102. max 4 because quic-go's HTTP/3 client
// gives up after 5 interim responses.
const relProgress = `
	processing {
		delay 20ms
		interval 20ms
		max 4
		header X-Progress "{http.processing.count}"
	}
`

// ---- panic and error after 102s -------------------------------------------

// failLate returns a behaviour that sets a field of its own, works long
// enough for several 102s, then fails with fail.
func failLate(fail func() error) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("X-Secret", "never-in-a-102")
		select {
		case <-time.After(150 * time.Millisecond):
		case <-r.Context().Done():
			return r.Context().Err()
		}
		return fail()
	}
}

const relHandleErrors = `
	handle_errors {
		header X-Handled yes
		respond "handled {err.status_code}" {err.status_code}
	}
`

func TestDownstreamFailureAfterInterimsAnsweredByHandleErrors(t *testing.T) {
	harness.LeakCheck(t)
	harness.SetBehaviour(t, "panic_late", failLate(func() error { panic("boom after 102s") }))
	harness.SetBehaviour(t, "error_late", failLate(func() error {
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("backend went away"))
	}))
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(relProgress+`
	@panic path /panic
	test_work @panic panic_late
	test_work error_late
`+relHandleErrors))
	h2 := harness.H2Client()
	defer h2.CloseIdleConnections()
	h3, closeH3 := harness.H3Client()
	defer closeH3()

	for _, tc := range []struct {
		path string
		code int
	}{{"/panic", 500}, {"/error", 503}} {
		t.Run(tc.path[1:]+"/HTTP1.1", func(t *testing.T) {
			res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet(tc.path), harness.ReadToClose)
			harness.CheckProgress(t, res, 2)
			wantBody := fmt.Sprintf("handled %d", tc.code)
			if res.Status != tc.code || string(res.Body) != wantBody || res.Header.Get("X-Handled") != "yes" {
				t.Fatalf("final %d %q (X-Handled %q), want %d %q from handle_errors:\n%s",
					res.Status, res.Body, res.Header.Get("X-Handled"), tc.code, wantBody, res.Wire)
			}
			if len(res.After) != 0 {
				t.Fatalf("bytes after the final response: %q", res.After)
			}
		})
		for _, pc := range []struct {
			name   string
			client *http.Client
		}{{"HTTP2", h2}, {"HTTP3", h3}} {
			t.Run(tc.path[1:]+"/"+pc.name, func(t *testing.T) {
				req, _ := http.NewRequestWithContext(harness.WithTimeout(t, 30*time.Second), "GET", fmt.Sprintf("https://127.0.0.1:%d%s", tlsPort, tc.path), nil)
				s, err := harness.TracedDo(t, pc.client, req)
				if err != nil {
					t.Fatal(err)
				}
				if s.Status != tc.code || string(s.Body) != fmt.Sprintf("handled %d", tc.code) {
					t.Fatalf("final %d %q", s.Status, s.Body)
				}
				if n := s.Count(102); n < 2 || n != len(s.Interims) {
					t.Fatalf("interims %+v, want 2 or more 102s only", s.Interims)
				}
				for i, in := range s.Interims {
					if err := harness.CheckProgressHeader(i+1, in.Header); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
	relAssertNoMoreInterims(t, 100*time.Millisecond)
}

func TestAbortHandlerAfterInterimsDropsConnection(t *testing.T) {
	harness.LeakCheck(t)
	harness.SetBehaviour(t, "abort_late", failLate(func() error { panic(http.ErrAbortHandler) }))
	harness.SetBehaviour(t, "fine", harness.SleepThen(0, "still up"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
`+relProgress+`
	@abort path /abort
	test_work @abort abort_late
	test_work fine
`+relHandleErrors+`
}
`)
	// http.ErrAbortHandler asks net/http to cut the response short: the
	// client sees 102s and then the connection closing, never a made-up
	// final response.
	res, err := harness.RawExchange(harness.Loopback(port), "GET /abort HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if !(errors.Is(err, io.EOF) || harness.IsConnReset(err)) || res.Status != 0 {
		t.Fatalf("want 102s then a closed connection, got status %d, err %v:\n%s", res.Status, err, res.Wire)
	}
	harness.CheckProgress(t, res, 2)

	// A panic in one request costs nothing to the next.
	res = harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
	if res.Status != 200 || string(res.Body) != "still up" || len(res.After) != 0 {
		t.Fatalf("next request: %d %q %q", res.Status, res.Body, res.After)
	}
	relAssertNoMoreInterims(t, 100*time.Millisecond)
}

func TestPanicBeforeFirstInterimGoesToNetHTTP(t *testing.T) {
	harness.LeakCheck(t)
	harness.SetBehaviour(t, "panic_early", func(w http.ResponseWriter, r *http.Request) error {
		panic("boom before any 102")
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 10s
	test_work panic_early
`+relHandleErrors+`
}
`)
	// Without a 102 sent, the module leaves the panic alone: net/http logs
	// it and closes the connection, as it would without the module.
	res, err := harness.RawExchange(harness.Loopback(port), "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if !(errors.Is(err, io.EOF) || harness.IsConnReset(err)) || len(res.Wire) != 0 {
		t.Fatalf("want the connection closed without a byte, got %q, %v", res.Wire, err)
	}
}

// ---- upgrades through reverse_proxy ---------------------------------------

// relEchoUpstream is a backend that answers an Upgrade: websocket request
// after wait with a 101 of its own making, then echoes every byte back
// until the client closes. It stops when the test ends.
func relEchoUpstream(t *testing.T, wait time.Duration) string {
	t.Helper()
	var tunnels sync.WaitGroup
	addr := harness.Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		time.Sleep(wait)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("upstream hijack: %v", err)
			return
		}
		tunnels.Add(1)
		defer tunnels.Done()
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			relWebSocketAccept(r.Header.Get("Sec-WebSocket-Key")))
		if err := brw.Flush(); err != nil {
			return
		}
		_, _ = io.Copy(conn, brw)
	}))
	// Runs before the upstream's close: a tunnel is the handler's, which
	// the upstream's close does not wait for.
	t.Cleanup(tunnels.Wait)
	return addr
}

// relWebSocketAccept is RFC 6455 §4.2.2's answer to a Sec-WebSocket-Key.
func relWebSocketAccept(key string) string {
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func TestUpgradeEndsInterimsAndTunnelWorks(t *testing.T) {
	harness.LeakCheck(t)
	for _, tc := range []struct {
		name    string
		wait    time.Duration
		atLeast int
	}{
		{"after 102s", 150 * time.Millisecond, 2},
		{"before the first 102", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			upstream := relEchoUpstream(t, tc.wait)
			port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
`+relProgress+`
	reverse_proxy `+upstream+`
}
`)
			// One reader for the handshake and the tunnel, so that bytes
			// after the 101 are never lost in a buffer.
			conn := harness.DialRawConn(t, harness.Loopback(port))
			const key = "dGhlIHNhbXBsZSBub25jZQ=="
			if err := conn.Send("GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			res, err := conn.Response(false)
			if err != nil {
				t.Fatalf("handshake: %v\n%s", err, res.Wire)
			}
			if res.Status != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != relWebSocketAccept(key) ||
				!strings.EqualFold(res.Header.Get("Upgrade"), "websocket") {
				t.Fatalf("handshake answer:\n%s", res.Wire)
			}
			harness.CheckProgress(t, res, tc.atLeast)

			// The tunnel stays open for many intervals: had a timer
			// survived the 101, its 102 would be among the echoed bytes.
			for i := range 3 {
				msg := fmt.Sprintf("\x81\x05frame-%d\n", i)
				if _, err := io.WriteString(conn, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(conn.R, got); err != nil || string(got) != msg {
					t.Fatalf("echo %d: %q, %v", i, got, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			_ = conn.Conn.(*net.TCPConn).CloseWrite()
			if rest, err := conn.Rest(); len(rest) != 0 || err != nil {
				t.Fatalf("after the tunnel closed: %q, %v", rest, err)
			}
		})
	}
	relAssertNoMoreInterims(t, 100*time.Millisecond)
}

// ---- reload and stop ------------------------------------------------------

// relAdminGlobals is the harness's global options with the admin endpoint
// on a loopback port, so that the test can reload as `caddy reload` does.
func relAdminGlobals(t *testing.T, adminPort int) string {
	g := harness.GlobalOptions(t)
	out := strings.Replace(g, "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	if out == g {
		t.Fatal("harness global options no longer say `admin off`")
	}
	return out
}

// relLongRequests starts n requests of each kind (raw HTTP/1.1, HTTP/2,
// HTTP/3) and returns a function that waits for them and checks that each
// finished with body and 102s that all carry X-Config: config.
func relLongRequests(t *testing.T, port, tlsPort, n int, body, config string) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	h2 := harness.H2Client()
	h3, closeH3 := harness.H3Client()
	check := func(kind string, status int, gotBody []byte, interims []http.Header) {
		if status != 200 || string(gotBody) != body {
			t.Errorf("%s: final %d %q, want 200 %q", kind, status, gotBody, body)
		}
		if len(interims) < 2 {
			t.Errorf("%s: %d 102s, want 2 or more", kind, len(interims))
		}
		for _, h := range interims {
			if len(h) != 1 || h.Get("X-Config") != config {
				t.Errorf("%s: 102 carries %v, want only X-Config: %s", kind, h, config)
			}
		}
	}
	for range n {
		wg.Add(3)
		go func() {
			defer wg.Done()
			res, err := harness.RawExchange(harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
			if err != nil {
				t.Errorf("HTTP/1.1: %v\n%s", err, res.Wire)
				return
			}
			var hs []http.Header
			for _, in := range res.Interims {
				if in.Code != 102 {
					t.Errorf("HTTP/1.1: interim %d", in.Code)
				}
				hs = append(hs, in.Header)
			}
			if len(res.After) != 0 {
				t.Errorf("HTTP/1.1: bytes after the final response: %q", res.After)
			}
			check("HTTP/1.1", res.Status, res.Body, hs)
		}()
		for _, pc := range []struct {
			kind   string
			client *http.Client
		}{{"HTTP/2", h2}, {"HTTP/3", h3}} {
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/", tlsPort), nil)
				s, err := harness.TracedDo(t, pc.client, req)
				if err != nil {
					t.Errorf("%s: %v", pc.kind, err)
					return
				}
				var hs []http.Header
				for _, in := range s.Interims {
					if in.Code != 102 {
						t.Errorf("%s: interim %d", pc.kind, in.Code)
					}
					hs = append(hs, in.Header)
				}
				check(pc.kind, s.Status, s.Body, hs)
			}()
		}
	}
	return func() {
		wg.Wait()
		h2.CloseIdleConnections()
		closeH3()
	}
}

func TestReloadAndStopWithLongRequestsInFlight(t *testing.T) {
	harness.LeakCheck(t)
	// inFlight counts the requests that got their first 102: they are
	// surely the running config's, in their 102s, when the test reloads or
	// stops it.
	var inFlight atomic.Int64
	harness.SetBehaviour(t, "long", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 1); err != nil {
			return err
		}
		inFlight.Add(1)
		return harness.SleepThen(time.Second, "long done")(w, r)
	})
	awaitInFlight := func(n int64) {
		t.Helper()
		harness.Eventually(t, fmt.Sprintf("%d requests in their 102s", n), func() bool { return inFlight.Load() >= n })
	}
	adminPort, port, tlsPort := harness.FreePort(t), harness.FreePort(t), harness.FreePort(t)
	config := func(name string) []byte {
		sites := harness.ProtocolSites(`
	processing {
		delay 200ms
		interval 200ms
		max 4
		header X-Config ` + name + `
	}
	test_work long
`)
		sites = strings.ReplaceAll(sites, "{PORT}", strconv.Itoa(port))
		sites = strings.ReplaceAll(sites, "{TLSPORT}", strconv.Itoa(tlsPort))
		return harness.Adapt(t, relAdminGlobals(t, adminPort)+sites)
	}
	// caddy.Stop leaves the admin endpoint serving. Once Caddy has stopped
	// at the end of the test (this cleanup runs after harness.LoadConfig's), a
	// config with the endpoint disabled closes it.
	t.Cleanup(func() {
		if err := caddy.Load([]byte(`{"admin": {"disabled": true, "config": {"persist": false}}}`), true); err != nil {
			t.Errorf("closing the admin endpoint: %v", err)
		}
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
	harness.LoadConfig(t, config("v1"))
	harness.WaitForTLS(t, tlsPort)

	// Reload through the admin endpoint, as `caddy reload` does, while
	// requests of the first config are in their 102s.
	waitV1 := relLongRequests(t, port, tlsPort, 3, "long done", "v1")
	awaitInFlight(9)
	res, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), "application/json", bytes.NewReader(config("v2")))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	msg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("reload: %d %s", res.StatusCode, msg)
	}
	// Requests that start after the reload are the new config's.
	waitV2 := relLongRequests(t, port, tlsPort, 1, "long done", "v2")
	waitV1()
	waitV2()

	// Stop (what `caddy stop` does, less the process exit) with requests
	// in flight: Caddy's eternal default grace period lets them finish.
	waitStop := relLongRequests(t, port, tlsPort, 2, "long done", "v2")
	awaitInFlight(9 + 3 + 6)
	stopped := make(chan error, 1)
	go func() { stopped <- caddyStopFromAdmin(adminPort) }()
	waitStop()
	if err := <-stopped; err != nil {
		t.Errorf("stop: %v", err)
	}
	relAssertNoMoreInterims(t, 200*time.Millisecond)
}

// caddyStopFromAdmin asks the admin endpoint to stop, as `caddy stop`
// does, but the /stop endpoint would also exit the test process; loading
// an empty config through the same endpoint stops every server instead.
func caddyStopFromAdmin(adminPort int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := fmt.Sprintf(`{"admin": {"listen": "127.0.0.1:%d", "config": {"persist": false}}}`, adminPort)
	req, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), strings.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	msg, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%d %s", res.StatusCode, msg)
	}
	return nil
}

// TestStopPastGracePeriodKeepsResponsesWhole stops Caddy with a short
// grace_period while a request waits on a slow handler. Go's Shutdown does
// not cut active connections when the grace period ends (in a real `caddy
// stop` the process exits then), so the request goes on after the stop:
// its 102s and its final response must stay whole, and nothing may follow.
func TestStopPastGracePeriodKeepsResponsesWhole(t *testing.T) {
	harness.LeakCheck(t)
	var veryLongStarted atomic.Bool
	harness.SetBehaviour(t, "very_long", func(w http.ResponseWriter, r *http.Request) error {
		veryLongStarted.Store(true)
		return harness.SleepThen(1500*time.Millisecond, "very long done")(w, r)
	})
	port, _ := harness.StartCaddyGlobal(t, strings.Replace(harness.GlobalOptions(t), "{", "{\n\tgrace_period 300ms", 1), `
http://127.0.0.1:{PORT} {
`+relProgress+`
	test_work very_long
}
`)
	conn := harness.DialRawConn(t, harness.Loopback(port))
	if err := conn.Send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Stop once the request is in its handler.
	harness.Eventually(t, "the request in its handler", func() bool { return veryLongStarted.Load() })
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	res, err := conn.Response(false)
	if err != nil {
		t.Fatalf("%v\n%s", err, res.Wire)
	}
	harness.CheckProgress(t, res, 4)
	if res.Status != 200 || string(res.Body) != "very long done" {
		t.Fatalf("final %d %q", res.Status, res.Body)
	}
	// Go closes a connection that outlived Shutdown after its response.
	if after, err := conn.Rest(); len(after) != 0 || err != nil {
		t.Fatalf("after the final response: %q, %v", after, err)
	}
	relAssertNoMoreInterims(t, 100*time.Millisecond)
}

// TestPanicAfterInterimsWithoutHandleErrorsGives500: with no error routes,
// Caddy answers the converted panic with its bare 500.
func TestPanicAfterInterimsWithoutHandleErrorsGives500(t *testing.T) {
	harness.LeakCheck(t)
	harness.SetBehaviour(t, "panic_late", failLate(func() error { panic("boom after 102s") }))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
`+relProgress+`
	test_work panic_late
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
	harness.CheckProgress(t, res, 2)
	if res.Status != 500 || len(res.Body) != 0 || len(res.After) != 0 {
		t.Fatalf("want a bare 500 and nothing after, got %d %q then %q", res.Status, res.Body, res.After)
	}
	relAssertNoMoreInterims(t, 100*time.Millisecond)
}

// TestUpstreamInterimsMeetTicks: reverse_proxy forwards an upstream's 103s
// from its transport's goroutine while the module's own 102s go out every
// millisecond from the wheel's fire goroutines. Under -race, with requests over raw HTTP/1.1
// in parallel, each interim must stay whole: a 102 with only its own
// numbered field, a 103 with the upstream's Link (in the upstream's order)
// and no X-Progress, and the final response after all of them.
func TestUpstreamInterimsMeetTicks(t *testing.T) {
	harness.LeakCheck(t)
	const hints = 20
	upstream := harness.Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range hints {
			w.Header().Set("Link", fmt.Sprintf("</hint%d>; rel=preload", i))
			w.WriteHeader(http.StatusEarlyHints)
			time.Sleep(time.Millisecond)
		}
		w.Header().Del("Link")
		w.Header().Set("X-Upstream", "final-only")
		_, _ = io.WriteString(w, "upstream body")
	}))

	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 1ms
		interval 1ms
		header X-Progress "{http.processing.count}"
	}
	reverse_proxy `+upstream+`
}
`)
	const requests = 40
	sentBefore := harness.InterimsSent(t)
	var wg sync.WaitGroup
	var n102, n103 atomic.Int64
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := harness.RawExchange(harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
			if err != nil {
				t.Errorf("%v\n%s", err, res.Wire)
				return
			}
			seen102, seen103 := 0, 0
			for _, in := range res.Interims {
				var want string
				switch in.Code {
				case http.StatusProcessing:
					seen102++
					want = harness.Progress102(seen102)
				case http.StatusEarlyHints:
					// A forwarded 1xx carries what Caddy would put on it
					// without the module: the upstream's fields and the
					// response's own so far (here Caddy's Server field).
					want = fmt.Sprintf("HTTP/1.1 103 Early Hints\r\nLink: </hint%d>; rel=preload\r\nServer: Caddy\r\n\r\n", seen103)
					seen103++
				}
				if in.Raw != want {
					t.Errorf("interim %q, want %q\nwhole:\n%s", in.Raw, want, res.Wire)
					return
				}
			}
			if seen103 != hints || res.Status != 200 || string(res.Body) != "upstream body" || res.Header.Get("X-Upstream") != "final-only" || len(res.After) != 0 {
				t.Errorf("%d 103s, final %d %q, then %q:\n%s", seen103, res.Status, res.Body, res.After, res.Wire)
			}
			n102.Add(int64(seen102))
			n103.Add(int64(seen103))
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d requests: %d forwarded 103s, %d 102s between them", requests, n103.Load(), n102.Load())
	if n103.Load() != requests*hints {
		t.Errorf("%d 103s forwarded, want %d", n103.Load(), requests*hints)
	}
	// The point is the meeting of the two kinds of interim: a run in
	// which no tick fell between the upstream's 103s proved nothing. Each
	// 103 restarts the 1 ms clock and the upstream waits at least 1 ms
	// before the next, so ticks are due all along; one is enough here.
	if n102.Load() == 0 {
		t.Errorf("no 102 between the upstream's %d 103s", n103.Load())
	}
	// Every 102 the module counted reached a client whole.
	if sent := harness.InterimsSent(t) - sentBefore; int64(sent) != n102.Load() {
		t.Errorf("module sent %v 102s, clients saw %d", sent, n102.Load())
	}
}
