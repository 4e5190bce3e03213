package processing

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// TestInterimsWhileNextHandlerWorks: while the next handler works, 102s go
// out on the grid delay + k × interval from the request's start: none
// early, none systematically late, and one that went out late (the wheel
// held up) does not push the next ones back: they return to the grid,
// skipping the slots already missed rather than sending them in a burst.
func TestInterimsWhileNextHandlerWorks(t *testing.T) {
	const delay, interval = 300 * time.Millisecond, 400 * time.Millisecond
	harness.SetBehaviour(t, "slow", harness.AfterInterims(3, "done"))
	// The second 102 of /stalled waits behind the held wheel until about
	// lateDelay + stall, late by most of an interval.
	const lateDelay, lateInterval, stall = 200 * time.Millisecond, 600 * time.Millisecond, 1100 * time.Millisecond
	harness.SetBehaviour(t, "stalled", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 1); err != nil {
			return err
		}
		holdWheel(t, stall)
		return harness.AfterInterims(4, "done")(w, r)
	})
	port, _ := harness.StartCaddy(t, heldWheelSite)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"))
	if res.Status != 200 || string(res.Body) != "done" {
		t.Fatalf("final response %d %q, want 200 \"done\"", res.Status, res.Body)
	}
	if n := len(res.Interims); n < 3 || n > 4 {
		t.Fatalf("got %d interim responses, want the 3 the handler waited for (a 4th at most):\n%s", n, res.Wire)
	}
	for k, in := range res.Interims {
		if in.Code != 102 || in.Raw != harness.BareProcessing {
			t.Errorf("interim %d is %q, want %q", k, in.Raw, harness.BareProcessing)
		}
		// None comes before its slot (the client's clock started before
		// the server's, so no slack is needed), none long after it.
		slot := delay + time.Duration(k)*interval
		if in.At < slot || in.At > slot+gridSlack {
			t.Errorf("interim %d came after %v, want within [%v, %v]", k, in.At, slot, slot+gridSlack)
		}
	}

	res = harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/stalled"))
	if res.Status != 200 || len(res.Interims) < 4 {
		t.Fatalf("held wheel: %d with %d interims:\n%s", res.Status, len(res.Interims), res.Wire)
	}
	if late := res.Interims[1].At; late < lateDelay+stall-50*time.Millisecond {
		t.Fatalf("the second 102 came after %v, not held up by the stalled wheel", late)
	}
	checkBackOnGrid(t, "held wheel", lateDelay, lateInterval, res.Interims[2].At, res.Interims[3].At)
}

// gridSlack is how late after its slot a 102 may arrive: the coalescing
// grid (at most maxGrid) and a loaded machine's scheduling delays, with
// room to spare, yet less than any interval the grid tests use, so that a
// schedule an interval late fails them.
const gridSlack = maxGrid + 225*time.Millisecond

// checkBackOnGrid checks that the 102s that came after a late one, at the
// times at (since the request was sent), are each on a slot delay + k ×
// interval: late by at most gridSlack, not by the late one's lateness.
func checkBackOnGrid(t *testing.T, what string, delay, interval time.Duration, at ...time.Duration) {
	t.Helper()
	for _, a := range at {
		if a < delay {
			t.Errorf("%s: 102 at %v, before the delay", what, a)
		} else if off := (a - delay) % interval; off > gridSlack {
			t.Errorf("%s: a 102 after the late one came after %v, %v past the slot at %v: pushed back by the late one",
				what, a, off, a-off)
		}
	}
}

// holdWheel holds the process's wheel for d, as a busy server might: no
// 102 falls due meanwhile, and those due go out late, when it lets go.
func holdWheel(t testing.TB, d time.Duration) {
	wh, err := acquireWheel()
	if err != nil {
		t.Error(err)
		return
	}
	defer releaseWheel()
	wh.mu.Lock()
	defer wh.mu.Unlock()
	time.Sleep(d) // the stall is the test's input
}

func TestNoInterimForRequestFasterThanDelay(t *testing.T) {
	harness.SetBehaviour(t, "quick", harness.SleepThen(20*time.Millisecond, "quick"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 1s
	test_work quick
}
`)
	for range 20 {
		res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"))
		if len(res.Interims) != 0 || res.Status != 200 || string(res.Body) != "quick" {
			t.Fatalf("got %d interims and %d %q:\n%s", len(res.Interims), res.Status, res.Body, res.Wire)
		}
	}
}

// anyStatusLine matches an HTTP/1.x status line: none may follow the final
// one.
var anyStatusLine = regexp.MustCompile(`HTTP/1\.[01] \d{3} `)

// TestNoInterimAfterFinalStatus: once the final status is written, the
// module sends no more 102s. Go's servers drop a 1xx written after the final
// status (with a "superfluous WriteHeader" log line) rather than put it on
// the wire, so the bytes alone cannot show one: the module's own counter
// must also have counted only the 102s the client saw.
func TestNoInterimAfterFinalStatus(t *testing.T) {
	// The next handler commits its status after a few 102s and then
	// streams slowly, across many 102 intervals.
	harness.SetBehaviour(t, "stream", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 3); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		for i := range 10 {
			fmt.Fprintf(w, "chunk %d\n", i)
			http.NewResponseController(w).Flush()
			time.Sleep(30 * time.Millisecond) // 3 intervals between chunks
		}
		return nil
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 50ms
		interval 10ms
	}
	test_work stream
}
`)
	sentBefore := harness.InterimsSent(t)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
	if res.Status != http.StatusAccepted || len(res.Interims) < 3 {
		t.Fatalf("got %d with %d interims, want 202 after at least 3:\n%s", res.Status, len(res.Interims), res.Wire)
	}
	final := bytes.Index(res.Wire, []byte("HTTP/1.1 202 Accepted\r\n"))
	if rest := res.Wire[final+1:]; bytes.Contains(rest, []byte(" 102 ")) || anyStatusLine.Match(rest) {
		t.Fatalf("a status line follows the final one:\n%s", res.Wire)
	}
	if len(res.After) != 0 {
		t.Fatalf("bytes follow the final response:\n%s", res.After)
	}
	if !strings.HasPrefix(string(res.Body), "chunk 0\n") || !strings.HasSuffix(string(res.Body), "chunk 9\n") {
		t.Fatalf("body %q", res.Body)
	}
	// The server closed the connection, so the handler has returned and
	// the count is final.
	if sent := harness.InterimsSent(t) - sentBefore; int(sent) != len(res.Interims) {
		t.Fatalf("the module counted %v 102s, the client got %d before the final status", sent, len(res.Interims))
	}
}

// TestInterimCarriesOnlyConfiguredHeaders: every 102 carries the
// configured fields and nothing else, whenever the next handler set its own:
// before the first 102, between two of them, or after several; and the
// final response carries all the next handler's fields and none of the
// 102s'.
func TestInterimCarriesOnlyConfiguredHeaders(t *testing.T) {
	// An upstream that sets a cookie at once and answers late, behind
	// reverse_proxy; the route's own header directive and a handler that
	// sets fields at once add more that must not leak either.
	upstream := harness.SlowUpstream(t, 700*time.Millisecond, "from upstream", "Set-Cookie: session=secret")
	harness.SetBehaviour(t, "leaky", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Set-Cookie", "local=secret")
		w.Header().Set("X-Internal", "do-not-leak")
		if err := harness.AwaitInterims(r, 3); err != nil {
			return err
		}
		_, err := io.WriteString(w, "from handler")
		return err
	})
	// A handler that sets a field, waits for a 102 to go out, sets the
	// next, and so on: each field is set while 102s are going out, and
	// the 102s after it must not carry it.
	const steps = 4
	harness.SetBehaviour(t, "between", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Set-Cookie", "step=secret")
		for i := range steps {
			if err := harness.AwaitInterims(r, i+1); err != nil {
				return err
			}
			w.Header().Set(fmt.Sprintf("X-Step-%d", i), "do-not-leak")
			w.Header().Add("Set-Cookie", fmt.Sprintf("step%d=secret", i))
		}
		if err := harness.AwaitInterims(r, steps+1); err != nil {
			return err
		}
		_, err := io.WriteString(w, "from steps")
		return err
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 100ms
		interval 150ms
		header X-Progress "step {http.processing.count}"
		header X-Method {http.request.method}
	}
	header X-Route "set by header directive"
	handle /proxy {
		reverse_proxy `+upstream+`
	}
	handle /between {
		test_work between
	}
	test_work leaky
}
`)
	for _, tc := range []struct {
		path    string
		cookies []string
		fields  []string // set by the next handler, wanted on the final response
		body    string
	}{
		{"/proxy", []string{"session=secret"}, nil, "from upstream"},
		{"/local", []string{"local=secret"}, []string{"X-Internal"}, "from handler"},
		{"/between", []string{"step=secret", "step0=secret", "step1=secret", "step2=secret", "step3=secret"},
			[]string{"X-Step-0", "X-Step-1", "X-Step-2", "X-Step-3"}, "from steps"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet(tc.path))
			if len(res.Interims) < 2 {
				t.Fatalf("got %d interims:\n%s", len(res.Interims), res.Wire)
			}
			for i, in := range res.Interims {
				want := fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Method: GET\r\nX-Progress: step %d\r\n\r\n", i+1)
				wantOther := fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Progress: step %d\r\nX-Method: GET\r\n\r\n", i+1)
				if in.Raw != want && in.Raw != wantOther {
					t.Errorf("interim %d:\n%q\nwant\n%q", i, in.Raw, want)
				}
			}
			if res.Status != 200 || string(res.Body) != tc.body {
				t.Fatalf("final %d %q", res.Status, res.Body)
			}
			if got := res.Header.Values("Set-Cookie"); !slices.Equal(got, tc.cookies) {
				t.Errorf("final Set-Cookie %q, want %q", got, tc.cookies)
			}
			for _, f := range tc.fields {
				if res.Header.Get(f) == "" {
					t.Errorf("final response lacks %s: %v", f, res.Header)
				}
			}
			// reverse_proxy swaps Caddy's Server field for Via.
			if (res.Header.Get("Server") != "Caddy" && res.Header.Get("Via") != "1.1 Caddy") || res.Header.Get("X-Route") == "" {
				t.Errorf("final response lost fields set before it: %v", res.Header)
			}
			if res.Header.Get("X-Progress") != "" {
				t.Errorf("a 102 field reached the final response: %v", res.Header)
			}
		})
	}
}

func TestHTTP10ClientGetsNoInterim(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.SleepThen(400*time.Millisecond, "done"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 50ms
	test_work slow
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
	if len(res.Interims) != 0 {
		t.Fatalf("HTTP/1.0 client got %d interims:\n%s", len(res.Interims), res.Wire)
	}
	if res.Status != 200 || string(res.Body) != "done" || !bytes.HasPrefix(res.Wire, []byte("HTTP/1.0 200 OK\r\n")) {
		t.Fatalf("final response:\n%s", res.Wire)
	}
	// The same server still sends 102s to HTTP/1.1.
	if res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/")); len(res.Interims) == 0 {
		t.Fatalf("HTTP/1.1 client got no interims:\n%s", res.Wire)
	}
}

func TestNextHandlersInterimsPassThroughAndRestartClock(t *testing.T) {
	// The upstream sends a 103 Early Hints every 150ms, and one 102 of its
	// own, for 1.2s. Each restarts the 400ms clock, so processing itself
	// sends none: the client sees exactly the upstream's interims, with
	// their own headers.
	upstream := harness.Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Set-Cookie", "upstream=secret")
		for i := range 8 {
			time.Sleep(150 * time.Millisecond)
			if i == 4 {
				w.WriteHeader(http.StatusProcessing)
				continue
			}
			w.Header().Set("Link", fmt.Sprintf("</style%d.css>; rel=preload", i))
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		io.WriteString(w, "final")
	}))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 400ms
	reverse_proxy `+upstream+`
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"))
	var hints, processing int
	for _, in := range res.Interims {
		switch in.Code {
		case http.StatusEarlyHints:
			want := fmt.Sprintf("</style%d.css>; rel=preload", hints+boolInt(hints >= 4))
			if got := in.Header.Get("Link"); got != want {
				t.Errorf("103 #%d has Link %q, want %q", hints, got, want)
			}
			hints++
		case http.StatusProcessing:
			processing++
		}
	}
	if hints != 7 {
		t.Errorf("got %d 103s, want 7:\n%s", hints, res.Wire)
	}
	// The upstream's own 102; one more of processing's is tolerated for a
	// slow machine. Without the restarts processing would add its own at
	// 400 and 800 ms (and 1200 ms on a slow run): three or four in all.
	if processing < 1 || processing > 2 {
		t.Errorf("got %d 102s, want the upstream's 1 (at most 2):\n%s", processing, res.Wire)
	}
	if res.Status != 200 || string(res.Body) != "final" || res.Header.Get("Set-Cookie") != "upstream=secret" {
		t.Fatalf("final %d %q %v", res.Status, res.Body, res.Header)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestMaxOptInAndMatcher(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.SleepThen(700*time.Millisecond, "done"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	handle /max {
		processing 50ms {
			max 2
		}
		test_work slow
	}
	handle /optin {
		processing {
			delay 300ms
			interval 100ms
			opt_in
		}
		test_work slow
	}
	handle /matched/* {
		@slowpaths path /matched/slow
		processing @slowpaths 50ms
		test_work slow
	}
}
`)
	get := func(path string, fields ...string) *harness.RawResponse {
		return harness.RawRequest(t, harness.Loopback(port), harness.RawGet(path, fields...))
	}
	if res := get("/max"); len(res.Interims) != 2 || res.Status != 200 {
		t.Errorf("max 2: got %d interims, status %d", len(res.Interims), res.Status)
	}
	if res := get("/optin"); len(res.Interims) != 0 || res.Status != 200 {
		t.Errorf("opt_in without Prefer: got %d interims", len(res.Interims))
	}
	res := get("/optin", "Prefer: respond-async, processing")
	if len(res.Interims) < 3 || res.Status != 200 {
		t.Fatalf("opt_in with Prefer: got %d interims, status %d", len(res.Interims), res.Status)
	}
	// Prefer: processing asks for the first 102 at once, not after delay.
	if first := res.Interims[0].At; first > 250*time.Millisecond {
		t.Errorf("first 102 for Prefer: processing came after %v, delay is 300ms", first)
	}
	if res := get("/matched/slow"); len(res.Interims) < 5 {
		t.Errorf("matched path: got %d interims", len(res.Interims))
	}
	if res := get("/matched/other"); len(res.Interims) != 0 || res.Status != 200 {
		t.Errorf("unmatched path: got %d interims", len(res.Interims))
	}
}

func TestJSONConfig(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.AfterInterims(3, "done"))
	port := harness.FreePort(t)
	cfg := map[string]any{
		"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"srv0": map[string]any{
			"listen": []string{harness.Loopback(port)},
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "processing", "delay": "100ms", "interval": "100ms", "max": 3,
					"header": map[string][]string{"X-Step": {"{http.processing.count}"}}},
				map[string]any{"handler": "test_work", "name": "slow"},
			}}},
		}}}},
	}
	harness.LoadConfig(t, harness.MustJSON(t, cfg))
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"))
	if len(res.Interims) != 3 || res.Status != 200 || string(res.Body) != "done" {
		t.Fatalf("got %d interims, %d %q:\n%s", len(res.Interims), res.Status, res.Body, res.Wire)
	}
	for i, in := range res.Interims {
		if want := fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Step: %d\r\n\r\n", i+1); in.Raw != want {
			t.Errorf("interim %d %q, want %q", i, in.Raw, want)
		}
	}
}

func TestDirectiveOrderWithoutOrderLine(t *testing.T) {
	// processing, written last, must come out after header and
	// basic_auth, before encode and the handlers that do the work.
	cfg := harness.Adapt(t, `
:8080 {
	reverse_proxy 127.0.0.1:9
	encode gzip
	header X-A b
	basic_auth {
		alice $2a$04$abcdefghijklmnopqrstuu5MFZd1vXp7z8Wdq2QDc1QW1bn1Am7vy
	}
	processing 5s
}
`)
	var parsed struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &parsed); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, route := range parsed.Apps.HTTP.Servers["srv0"].Routes {
		for _, h := range route.Handle {
			order = append(order, h.Handler)
		}
	}
	if got := strings.Join(order, ","); got != "headers,authentication,processing,encode,reverse_proxy" {
		t.Fatalf("handler order %s", got)
	}
}

func TestDownstreamSeesOrdinaryResponseWriter(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	wantSum := sha256.Sum256(big)

	// Work before file_server: 102s go out, and file_server then gets the
	// writer they went through.
	var readerFrom atomic.Int32 // 1: file_server's writer is an io.ReaderFrom, 2: it is not
	harness.SetBehaviour(t, "beforefile", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		if _, ok := w.(io.ReaderFrom); ok {
			readerFrom.Store(1)
		} else {
			readerFrom.Store(2)
		}
		return harness.ErrNext
	})
	harness.SetBehaviour(t, "servecontent", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		f, err := os.Open(filepath.Join(dir, "big.bin"))
		if err != nil {
			return err
		}
		defer f.Close()
		// http.ServeContent copies through io.ReaderFrom: the sendfile path.
		http.ServeContent(w, r, "big.bin", time.Time{}, f)
		return nil
	})
	flushed := make(chan struct{})
	harness.SetBehaviour(t, "flush", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		rc := http.NewResponseController(w)
		// Reaches the connection through Unwrap.
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			return err
		}
		io.WriteString(w, "first;")
		if err := rc.Flush(); err != nil {
			return err
		}
		select {
		case <-flushed:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "second")
		return nil
	})
	harness.SetBehaviour(t, "hijack", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return err
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		return brw.Flush()
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 50ms
	handle /static/* {
		uri strip_prefix /static
		root * `+dir+`
		test_work beforefile
		file_server
	}
	handle /servecontent {
		test_work servecontent
	}
	handle /flush {
		test_work flush
	}
	handle /hijack {
		test_work hijack
	}
}
`)
	get := func(path string) *harness.RawResponse {
		return harness.RawRequest(t, harness.Loopback(port), harness.RawGet(path))
	}
	// file_server copies the file with io.Copy, which takes the writer's
	// ReadFrom, and net/http's ReadFrom sends the file with sendfile(2):
	// the module's writer must offer it after 102s went out too.
	t.Run("file_server", func(t *testing.T) {
		res := get("/static/big.bin")
		if res.Status != 200 || sha256.Sum256(res.Body) != wantSum || len(res.Interims) < 2 {
			t.Fatalf("file_server: %d, %d bytes, %d interims", res.Status, len(res.Body), len(res.Interims))
		}
		if readerFrom.Load() != 1 {
			t.Fatalf("the writer file_server got after 102s is not an io.ReaderFrom: no sendfile")
		}
	})
	t.Run("ReadFrom", func(t *testing.T) {
		res := get("/servecontent")
		if res.Status != 200 || sha256.Sum256(res.Body) != wantSum || len(res.Interims) < 2 {
			t.Fatalf("ServeContent: %d, %d bytes, %d interims", res.Status, len(res.Body), len(res.Interims))
		}
	})
	t.Run("Flush", func(t *testing.T) {
		conn, err := harness.DialRaw(harness.Loopback(port))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, harness.RawGet("/flush"))
		// The flushed part arrives while the handler still waits.
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, []byte("first;")) {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("before the flushed part arrived: %v\n%s", err, got)
			}
			got = append(got, buf[:n]...)
		}
		close(flushed)
		rest, _ := io.ReadAll(conn)
		got = append(got, rest...)
		if !bytes.Contains(got, []byte("HTTP/1.1 102 Processing\r\n\r\n")) || !bytes.Contains(got, []byte("HTTP/1.1 200 OK\r\n")) ||
			!bytes.Contains(got, []byte("second")) {
			t.Fatalf("wire:\n%s", got)
		}
	})
	t.Run("Hijack", func(t *testing.T) {
		res := get("/hijack")
		if res.Status != 200 || string(res.Body) != "hijacked" || len(res.Interims) < 2 {
			t.Fatalf("hijack: %d %q, %d interims", res.Status, res.Body, len(res.Interims))
		}
	})
}

// TestOtherFieldsSetBeforeTheModule: the writer's stash holds only the
// fields Caddy's server sets (Server, Alt-Svc). A field that a handler
// before the module set makes the request move them all to a map of its
// own for its 102s instead; they still stay out of every 102, reach the
// final response, and the next handler can delete them.
func TestOtherFieldsSetBeforeTheModule(t *testing.T) {
	harness.SetBehaviour(t, "keeps", harness.WriteAfterInterims(2, "body"))
	harness.SetBehaviour(t, "deletes", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		w.Header().Del("X-Before")
		w.Header().Del("Server")
		_, err := io.WriteString(w, "body")
		return err
	})
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	route {
		header X-Before yes
		processing 50ms
		handle /keeps {
			test_work keeps
		}
		handle /deletes {
			test_work deletes
		}
	}
`))
	check := func(t *testing.T, path string, interims int, h http.Header) {
		t.Helper()
		want := map[string]string{"/keeps": "yes", "/deletes": ""}[path]
		if interims < 2 || h.Get("X-Before") != want || (h.Get("Server") == "Caddy") != (want != "") {
			t.Fatalf("%d interims, final header %v", interims, h)
		}
	}
	for _, path := range []string{"/keeps", "/deletes"} {
		t.Run(path, func(t *testing.T) {
			res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet(path))
			for _, in := range res.Interims {
				if in.Raw != harness.BareProcessing {
					t.Fatalf("interim %q", in.Raw)
				}
			}
			check(t, path, len(res.Interims), res.Header)
			req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d%s", tlsPort, path), nil)
			s, err := harness.TracedDo(t, harness.H2Client(), req)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range s.Interims {
				if len(in.Header) != 0 {
					t.Fatalf("HTTP/2 interim with fields %v", in.Header)
				}
			}
			check(t, path, s.Count(102), s.Header)
		})
	}
}

// TestFieldsSetBeforeTheModuleReachTheFinalResponse: Caddy's server sets
// Server (and Alt-Svc over TLS) before the route runs. The module moves
// them out of the way of its 102s and must put them back, whether the next
// handler asks for its header map before the final status, writes without
// asking, or fails into handle_errors.
func TestFieldsSetBeforeTheModuleReachTheFinalResponse(t *testing.T) {
	harness.SetBehaviour(t, "writeonly", harness.WriteAfterInterims(2, "body"))
	harness.SetBehaviour(t, "header", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		w.Header().Set("X-Late", "1")
		_, err := io.WriteString(w, "body")
		return err
	})
	harness.SetBehaviour(t, "fails", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		return fmt.Errorf("downstream failed")
	})
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	processing 50ms
	handle /writeonly {
		test_work writeonly
	}
	handle /header {
		test_work header
	}
	handle /fails {
		test_work fails
	}
	handle_errors {
		respond "handled" 503
	}
`))
	for _, path := range []string{"/writeonly", "/header", "/fails"} {
		t.Run(path, func(t *testing.T) {
			res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet(path))
			if len(res.Interims) < 2 || res.Header.Get("Server") != "Caddy" {
				t.Fatalf("%d interims, final header %v", len(res.Interims), res.Header)
			}
			for _, in := range res.Interims {
				if in.Raw != harness.BareProcessing {
					t.Fatalf("interim %q", in.Raw)
				}
			}
			req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d%s", tlsPort, path), nil)
			s, err := harness.TracedDo(t, harness.H1Client(), req)
			if err != nil {
				t.Fatal(err)
			}
			if s.Count(102) < 2 || s.Header.Get("Server") != "Caddy" || s.Header.Get("Alt-Svc") == "" {
				t.Fatalf("TLS: %d interims, final header %v", s.Count(102), s.Header)
			}
			for _, in := range s.Interims {
				if len(in.Header) != 0 {
					t.Fatalf("TLS interim with fields %v", in.Header)
				}
			}
			if path == "/fails" && (s.Status != 503 || string(s.Body) != "handled") {
				t.Fatalf("handle_errors: %d %q", s.Status, s.Body)
			}
			if path == "/header" && s.Header.Get("X-Late") != "1" {
				t.Fatalf("lost X-Late: %v", s.Header)
			}
		})
	}
}

// TestTrailersSetThroughAKeptHeaderMap: a handler may keep the map Header
// returned before the final status and set its trailers on it after the
// body, as net/http allows. The module moved that map's fields to the real
// one at the final status, and must move the trailers too.
func TestTrailersSetThroughAKeptHeaderMap(t *testing.T) {
	harness.SetBehaviour(t, "trailers", func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		h.Set("Trailer", "X-Checksum")
		if err := harness.AwaitInterims(r, 2); err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		if _, err := io.WriteString(w, "payload"); err != nil {
			return err
		}
		h.Set("X-Checksum", "abc123")
		return nil
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing 50ms
	test_work trailers
}
`)
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	s, err := harness.TracedDo(t, harness.H1Client(), req)
	if err != nil {
		t.Fatal(err)
	}
	if s.Count(102) < 2 || s.Status != 200 || string(s.Body) != "payload" {
		t.Fatalf("got %d interims, %d %q", s.Count(102), s.Status, s.Body)
	}
	if got := s.Trailer.Get("X-Checksum"); got != "abc123" {
		t.Fatalf("trailer X-Checksum %q, want abc123 (trailers %v)", got, s.Trailer)
	}
}
