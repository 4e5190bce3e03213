package processing

// What happens to the objects the module hands downstream once its
// ServeHTTP has returned: the request's variable table, the request body
// wrapper and the ResponseWriter. Go's Transport dials and reads request
// bodies after RoundTrip returned, and other handlers' goroutines may keep
// the writer (FACTS-1xx.md, "Lifecycle").

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stuckListener returns the address of a loopback listener whose accept
// queue is full and that never accepts, so that a new connection to it hangs
// in connect: Linux drops the SYN of a connection the full queue cannot
// take, and the client retransmits until its dialer gives up.
func stuckListener(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	// A backlog of 0 leaves room for one connection (Linux takes
	// backlog+1).
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	address := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	var fillers []net.Conn
	t.Cleanup(func() {
		for _, c := range fillers {
			c.Close()
		}
		syscall.Close(fd)
	})
	for range 16 {
		c, err := net.DialTimeout("tcp", address, 300*time.Millisecond)
		if err != nil {
			return address // the queue is full: this dial hung
		}
		fillers = append(fillers, c)
	}
	t.Fatal("the accept queue of the stuck listener never filled")
	return ""
}

// TestNoVariableWriteAfterClientGivesUpDuringDial is the regression test for
// a crash: the module once wrote the request's variable table after
// next returned, while reverse_proxy's transport, still dialing on its own
// goroutine after the cancelled RoundTrip had returned, read the same table
// (caddyhttp.GetVar in its dial function). Under -race this test fails on
// that write; without -race the same race is a fatal "concurrent map read
// and map write" that kills the process.
func TestNoVariableWriteAfterClientGivesUpDuringDial(t *testing.T) {
	stuck := stuckListener(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	port, _ := harness.StartCaddy(t, fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	log {
		output file %s
		format json
	}
	vars tenant acme
	log_append interim_count {http.vars.processing.interim_count}
	processing 5ms
	reverse_proxy %s {
		transport http {
			dial_timeout 1s
		}
	}
}
`, accessLog, stuck))

	const requests, concurrency = 300, 20
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	harness.TrackTransport(client.Transport.(*http.Transport))
	var wg sync.WaitGroup
	var mu sync.Mutex
	gaveUp := 0
	sem := make(chan struct{}, concurrency)
	for i := range requests {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Give up during the dial, after a 102 or two on some.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(20+i%30)*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
			res, err := client.Do(req)
			if err == nil {
				res.Body.Close()
				t.Errorf("request %d got %d from an upstream that cannot be reached in time", i, res.StatusCode)
				return
			}
			if errors.Is(err, context.DeadlineExceeded) {
				mu.Lock()
				gaveUp++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if gaveUp != requests {
		t.Fatalf("%d of %d clients gave up during the dial; the rest failed otherwise", gaveUp, requests)
	}
	// The transport's dials end at its dial timeout; wait for them, so that
	// the leak check at the end of the run does not see them and every
	// request that reached Caddy is in the access log.
	harness.Eventually(t, "the upstream dials to end", func() bool {
		return !strings.Contains(allStacks(), "reverseproxy.(*HTTPTransport).NewTransport")
	})
	// Each request that reached Caddy (a client may give up before it
	// did) is logged with its count as a number: the module's variable is
	// readable after the handler returned.
	entries := harness.ReadJSONLines(t, accessLog)
	if len(entries) < requests/3 {
		t.Fatalf("only %d access log entries for %d requests", len(entries), requests)
	}
	for _, e := range entries {
		if _, ok := e["interim_count"].(float64); !ok {
			t.Fatalf("access log entry without a numeric interim_count: %v", e)
		}
	}
}

// allStacks is every goroutine's stack.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// lateUse runs a request whose handler hands something to a goroutine that
// uses it only after the handler returned, while a second request on
// another connection waits for its own answer behind processing. use runs
// in that goroutine; it returns when use has returned.
type lateUse struct {
	secondWaiting chan struct{} // closed when the second request's handler runs
	used          chan struct{} // closed when the late use is over
}

func newLateUse() *lateUse {
	return &lateUse{secondWaiting: make(chan struct{}), used: make(chan struct{})}
}

// second is the behaviour of the request that must stay untouched: it
// signals that it runs, waits for the late use and a few 102s more, and
// answers.
func (l *lateUse) second(w http.ResponseWriter, r *http.Request) error {
	close(l.secondWaiting)
	<-l.used
	// 102s after the late use are where a write it made to this
	// connection would show.
	if err := harness.AwaitInterims(r, harness.InterimsSoFar(r)+3); err != nil {
		return err
	}
	_, err := io.WriteString(w, "second")
	return err
}

// checkSecondRaw asserts that the second request's connection carried only
// its own bare 102s and its own final response.
func checkSecondRaw(t *testing.T, res *harness.RawResponse) {
	t.Helper()
	if res.Status != 200 || string(res.Body) != "second" {
		t.Fatalf("second request: %d %q\n%s", res.Status, res.Body, res.Wire)
	}
	if len(res.Interims) == 0 {
		t.Fatalf("second request got no 102, so the check saw nothing:\n%s", res.Wire)
	}
	for _, in := range res.Interims {
		if in.Raw != "HTTP/1.1 102 Processing\r\n\r\n" {
			t.Fatalf("second request got an interim response that is not its own bare 102: %q\n%s", in.Raw, res.Wire)
		}
	}
}

const lateUseSites = `
http://127.0.0.1:{PORT} {
	processing 30ms
	handle /first {
		test_work first
	}
	handle /second {
		test_work second
	}
}
`

// TestLateFirstBodyReadTouchesNoOtherResponse: a transport may read a
// request body for the first time after RoundTrip returned
// (http.RoundTripper's contract allows it). The body wrapper's reads write
// the module's 100 Continue for Expect: 100-continue and end the request's
// receiving phase: on a writer that is done they only pass through to the
// body, and touch no connection.
func TestLateFirstBodyReadTouchesNoOtherResponse(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"expect", "POST /first HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"},
		{"body sent", "POST /first HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLateUse()
			readErr := make(chan error, 1)
			harness.SetBehaviour(t, "first", func(w http.ResponseWriter, r *http.Request) error {
				body := r.Body
				go func() {
					defer close(l.used)
					<-l.secondWaiting
					_, err := body.Read(make([]byte, 16))
					readErr <- err
				}()
				_, err := io.WriteString(w, "first")
				return err
			})
			harness.SetBehaviour(t, "second", l.second)
			port, _ := harness.StartCaddy(t, lateUseSites)

			first := harness.RawRequest(t, harness.Loopback(port), tc.request)
			if first.Status != 200 || string(first.Body) != "first" || len(first.Interims) != 0 {
				t.Fatalf("first request: %d %q with %d interims\n%s", first.Status, first.Body, len(first.Interims), first.Wire)
			}
			second := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/second"))
			checkSecondRaw(t, second)
			if err := <-readErr; err == nil {
				t.Errorf("a read of a finished request's body succeeded; want net/http's error")
			}
		})
	}
}

// TestLateInterimFromAGoroutineTouchesNoOtherResponse: a handler's goroutine
// that kept the writer (as reverse_proxy's transport goroutine does for
// upstream 1xx) writes a 103 with a field, a body and a flush after the
// handler returned. Nothing of it may reach any connection: on HTTP/2 a
// late WriteHeader would panic in x/net, and net/http's HTTP/1.1 writer
// serves another response by then.
func TestLateInterimFromAGoroutineTouchesNoOtherResponse(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			l := newLateUse()
			late := make(chan error, 1)
			harness.SetBehaviour(t, "first", func(w http.ResponseWriter, r *http.Request) error {
				go func() {
					defer close(l.used)
					<-l.secondWaiting
					w.Header().Set("Link", "</late.css>; rel=preload")
					w.WriteHeader(http.StatusEarlyHints)
					_, err := w.Write([]byte("late"))
					http.NewResponseController(w).Flush()
					late <- err
				}()
				_, err := io.WriteString(w, "first")
				return err
			})
			harness.SetBehaviour(t, "second", l.second)
			port, _ := harness.StartCaddy(t, lateUseSites)

			if proto == "HTTP/1.1" {
				first := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/first"))
				if first.Status != 200 || string(first.Body) != "first" || len(first.Interims) != 0 {
					t.Fatalf("first request: %d %q\n%s", first.Status, first.Body, first.Wire)
				}
				checkSecondRaw(t, harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/second")))
			} else {
				// One HTTP/2 connection carries both requests.
				client := harness.H2CClient()
				base := fmt.Sprintf("http://127.0.0.1:%d", port)
				req, _ := http.NewRequest("GET", base+"/first", nil)
				first, err := harness.TracedDo(t, client, req)
				if err != nil || first.Status != 200 || string(first.Body) != "first" || len(first.Interims) != 0 {
					t.Fatalf("first request: %v %+v", err, first)
				}
				req, _ = http.NewRequest("GET", base+"/second", nil)
				second, err := harness.TracedDo(t, client, req)
				if err != nil || second.Status != 200 || string(second.Body) != "second" {
					t.Fatalf("second request: %v %+v", err, second)
				}
				if second.Count(http.StatusProcessing) == 0 || second.Count(http.StatusProcessing) != len(second.Interims) {
					t.Fatalf("second request's interim responses: %+v", second.Interims)
				}
				for _, in := range second.Interims {
					if len(in.Header) != 0 {
						t.Fatalf("a 102 of the second request carries fields: %v", in.Header)
					}
				}
				if second.Header.Get("Link") != "" {
					t.Fatalf("the second response carries the late field: %v", second.Header)
				}
			}
			if err := <-late; err == nil {
				t.Errorf("a late Write succeeded; want an error")
			}
		})
	}
}

// TestInterimCountVariable: the request variable holds the count for every
// request that passed the handler, as a JSON number in the access log
// (log_append) and as digits through its placeholder, and 0 for a request
// the module leaves alone.
func TestInterimCountVariable(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.SleepThen(250*time.Millisecond, "done"))
	accessLog := filepath.Join(t.TempDir(), "access.log")
	port, _ := harness.StartCaddy(t, fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	log {
		output file %s
		format json
	}
	log_append interim_count {http.vars.processing.interim_count}
	header >X-Interims "n={http.vars.processing.interim_count}"
	handle /all {
		processing 40ms
		test_work slow
	}
	handle /optin {
		processing 40ms {
			opt_in
		}
		test_work slow
	}
}
`, accessLog))

	cases := []struct {
		name, request string
		some          bool // whether 102s are expected
	}{
		{"HTTP/1.1", "GET /all?1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", true},
		{"HTTP/1.0 is left alone", "GET /all?2 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", false},
		{"opt_in without Prefer", "GET /optin?3 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", false},
		{"opt_in with Prefer", "GET /optin?4 HTTP/1.1\r\nHost: 127.0.0.1\r\nPrefer: processing\r\nConnection: close\r\n\r\n", true},
	}
	want := map[string]float64{}
	for _, c := range cases {
		res := harness.RawRequest(t, harness.Loopback(port), c.request)
		n := len(res.Interims)
		if res.Status != 200 || string(res.Body) != "done" || (n > 0) != c.some {
			t.Fatalf("%s: %d %q with %d interims\n%s", c.name, res.Status, res.Body, n, res.Wire)
		}
		// The header directive's deferred operation runs at the final
		// status, after the last 102: the placeholder gives the digits.
		if got := res.Header.Get("X-Interims"); got != fmt.Sprintf("n=%d", n) {
			t.Errorf("%s: X-Interims %q after %d 102s", c.name, got, n)
		}
		uri := strings.Fields(c.request)[1]
		want[uri] = float64(n)
	}
	harness.Eventually(t, "the access log", func() bool { return len(harness.ReadJSONLines(t, accessLog)) >= len(cases) })
	for _, e := range harness.ReadJSONLines(t, accessLog) {
		req, _ := e["request"].(map[string]any)
		uri, _ := req["uri"].(string)
		n, ok := e["interim_count"].(float64)
		if !ok {
			t.Errorf("%s: interim_count is %#v, want a JSON number", uri, e["interim_count"])
			continue
		}
		if n != want[uri] {
			t.Errorf("%s: interim_count %v, want %v", uri, n, want[uri])
		}
		delete(want, uri)
	}
	if len(want) != 0 {
		t.Errorf("no access log entry for %v", want)
	}
}

// TestStalledClientHoldsBackNoOtherRequest: HTTP/1.1 flushes every 1xx to
// the socket, so a 102 to a client that stopped reading blocks once the
// socket buffers are full. Each due 102 is written on a goroutine of its
// own, off the wheel's: another request's 102s keep coming meanwhile.
func TestStalledClientHoldsBackNoOtherRequest(t *testing.T) {
	release := make(chan struct{})
	harness.SetBehaviour(t, "hold", holdUntil(release))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 2ms {
		header X-Pad `+strings.Repeat("x", 8000)+`
	}
	test_work hold
}
`)
	// The stalled client: a small receive buffer, and it never reads.
	stalled, err := stallingDialer.Dial("tcp", harness.Loopback(port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stalled, "GET /stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Wait until a 102 of the stalled request is blocked in its write.
	harness.Eventually(t, "a 102 blocked on the stalled client", func() bool {
		return countStacks("(*interimWriter).due", "poll.(*FD).Write") > 0
	})

	time.AfterFunc(400*time.Millisecond, func() { close(release) })
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/other"))
	if res.Status != 200 || string(res.Body) != "done" {
		t.Fatalf("the other request: %d %q", res.Status, res.Body)
	}
	// 400 ms at a 2 ms interval is about 200 102s; a request held back
	// by the stalled one would get none until the release.
	if n := len(res.Interims); n < 40 {
		t.Fatalf("the other request got %d 102s in 400 ms at a 2 ms interval while another client stalled", n)
	}
	stalled.Close()
}

// TestStalledHTTP2ClientHoldsBackNoOtherRequest: an h2c client that stops
// reading, behind a download that filled its socket, with 100 streams
// waiting for 102s. x/net's WriteHeader for a 1xx waits until the
// connection's writer has written the frame, so each of those 102s blocks
// the goroutine sending it, more of them than fireAll starts for a tick.
// The test stops the wheel's clock while every request arrives, so that
// all their first 102s fall due in the one tick that catches up, the
// others' behind the blocked ones. Every other request must still get its
// 102 (before the watch, none of them did).
func TestStalledHTTP2ClientHoldsBackNoOtherRequest(t *testing.T) {
	const stalledStreams, others = 100, 30
	release := make(chan struct{})
	hold := holdUntil(release)
	harness.SetBehaviour(t, "stall", func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/endless" {
			chunk := make([]byte, 32<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
		}
		return hold(w, r)
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 100ms
		interval 1s
	}
	test_work stall
}
`)
	stalled := dialStalledH2C(t, harness.Loopback(port))
	defer stalled.Close()
	// Stream 1 downloads the endless body; windows wide open, the server
	// sends until its socket is full, and its frame writer blocks.
	stalled.request(t, 1, "/endless")
	harness.Eventually(t, "the stalled connection's frame writer blocked on the socket", func() bool {
		return countStacks("(*serverConn).writeFrameAsync", "poll.(*FD).Write") > 0
	})

	// Stop the wheel's time: requests are listed, none falls due.
	wh, err := acquireWheel()
	if err != nil {
		t.Fatal(err)
	}
	defer releaseWheel()
	setClock := func(c clock) {
		wh.mu.Lock()
		wh.clock = c
		wh.mu.Unlock()
	}
	setClock(stoppedClock{monoClock{}.now()})
	defer setClock(monoClock{})
	for i := range stalledStreams {
		stalled.request(t, uint32(3+2*i), "/stalled")
	}
	// The others start a grid step (25 ms at this interval) later, so that
	// their 102s come after the stalled ones in the tick that takes them.
	harness.Eventually(t, "the stalled streams listed on the wheel", func() bool {
		wh.mu.Lock()
		defer wh.mu.Unlock()
		return wh.n >= stalledStreams
	})
	time.Sleep(30 * time.Millisecond)
	client := harness.H2CClient()
	results := make([]*harness.Seen, others)
	errs := make([]error, others)
	var wg sync.WaitGroup
	for i := range others {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/other/%d", harness.Loopback(port), i), nil)
			results[i], errs[i] = harness.TracedDo(t, client, req)
		})
	}
	harness.Eventually(t, "every request listed on the wheel", func() bool {
		wh.mu.Lock()
		defer wh.mu.Unlock()
		return wh.n >= stalledStreams+others
	})
	time.Sleep(200 * time.Millisecond) // every first 102 (100 ms) is now overdue
	setClock(monoClock{})              // the next tick catches up and takes them all

	harness.Eventually(t, "the stalled streams' 102s blocked in x/net", func() bool {
		return countStacks("(*interimWriter).due", "(*serverConn).writeHeaders") >= maxFireGoroutines
	})
	time.Sleep(time.Second) // the others' 102s, if nothing holds them back
	close(release)
	wg.Wait()
	without := 0
	for i, s := range results {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if s.Status != http.StatusOK || string(s.Body) != "done" {
			t.Fatalf("request %d: %d %q", i, s.Status, s.Body)
		}
		if s.Count(http.StatusProcessing) == 0 {
			without++
		}
	}
	if without > 0 {
		t.Fatalf("%d of %d requests got no 102 while a client that stopped reading had %d streams waiting", without, others, stalledStreams)
	}
	stalled.Close()
	harness.Eventually(t, "the stalled streams' handlers ended", func() bool {
		return countStacks("(*interimWriter).due") == 0 && countStacks("testWork).ServeHTTP") == 0
	})
}

// stoppedClock is a clock whose time stands still; its timers are real.
type stoppedClock struct{ t time.Duration }

func (c stoppedClock) now() time.Duration { return c.t }

func (stoppedClock) afterFunc(d time.Duration, f func()) clockTimer {
	return monoClock{}.afterFunc(d, f)
}

// countStacks counts the goroutines whose stack holds every one of parts.
func countStacks(parts ...string) int {
	n := 0
	for _, g := range strings.Split(allStacks(), "\n\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(g, p) {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// stallingDialer dials with a receive buffer of 4 KiB, set before connect
// (tcp(7): the window scale is fixed at the SYN), for clients that stop
// reading: the server's writes to them block once the small buffers are
// full.
var stallingDialer = net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	if err != nil {
		return err
	}
	return serr
}}

// holdUntil is a next handler that answers "done" once release is closed,
// or gives up when the client goes.
func holdUntil(release <-chan struct{}) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-release:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		_, err := io.WriteString(w, "done")
		return err
	}
}

// stalledH2C is an h2c connection whose client never reads (see
// stallingDialer), with flow-control windows opened wide, so that the server
// writes until its socket is full instead of stopping on flow control,
// which would block no write.
type stalledH2C struct {
	net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialStalledH2C(t *testing.T, address string) *stalledH2C {
	t.Helper()
	conn, err := stallingDialer.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	s := &stalledH2C{Conn: conn, fr: http2.NewFramer(conn, nil)}
	s.enc = hpack.NewEncoder(&s.hbuf)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: math.MaxInt32}); err != nil {
		t.Fatal(err)
	}
	if err := s.fr.WriteWindowUpdate(0, math.MaxInt32-65535); err != nil {
		t.Fatal(err)
	}
	return s
}

// request opens stream id with a GET of path.
func (s *stalledH2C) request(t *testing.T, id uint32, path string) {
	t.Helper()
	s.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "127.0.0.1"}} {
		_ = s.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.hbuf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}
