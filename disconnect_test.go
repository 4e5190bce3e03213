package processing

// Clients that go away at every stage of a request: before the first 102,
// between 102s, in the middle of the response body and in the middle of an
// upload. Whatever the protocol, the next handler hears of it (its context
// is cancelled, or its body read fails), the module's timer stops with the
// request, and once Caddy stops nothing of the request is left running.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// discRecord is what the next handler reports about one request.
type discRecord struct {
	started   chan struct{} // the handler is running
	cancelled chan struct{} // it saw its context done or its body fail
	returned  chan struct{} // it returned
	over      chan struct{} // processing's ServeHTTP returned (relRequestOver)
	how       atomic.Value  // string: how it learnt the client had gone
}

var discRecords sync.Map // request id → *discRecord

func newDiscRecord(t *testing.T, id string) *discRecord {
	rec := &discRecord{started: make(chan struct{}), cancelled: make(chan struct{}), returned: make(chan struct{}), over: make(chan struct{})}
	discRecords.Store(id, rec)
	t.Cleanup(func() { discRecords.Delete(id) })
	return rec
}

// relRequestOver (directive rel_request_over, for use inside a route
// before processing) reports when everything after it, processing
// included, has returned: from then on no tick of the request may run.
type relRequestOver struct{}

func (relRequestOver) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.rel_request_over", New: func() caddy.Module { return new(relRequestOver) }}
}

// relRequestsOver counts requests that relRequestOver saw finish.
var relRequestsOver atomic.Int64

func (relRequestOver) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	defer func() {
		relRequestsOver.Add(1)
		if v, ok := discRecords.Load(r.URL.Query().Get("id")); ok {
			close(v.(*discRecord).over)
		}
	}()
	return next.ServeHTTP(w, r)
}

func init() {
	caddy.RegisterModule(relRequestOver{})
	httpcaddyfile.RegisterHandlerDirective("rel_request_over", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return relRequestOver{}, nil
	})
}

// discBehaviour waits for the client to go. With stage=midbody it first
// commits a 200 and sends part of the body; a POST reads its body first.
func discBehaviour(w http.ResponseWriter, r *http.Request) error {
	v, ok := discRecords.Load(r.URL.Query().Get("id"))
	if !ok {
		return fmt.Errorf("unknown request %q", r.URL.RawQuery)
	}
	rec := v.(*discRecord)
	defer close(rec.returned)
	close(rec.started)
	w.Header().Set("X-Secret", "never-in-a-102")
	if r.Method == http.MethodPost {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			rec.how.Store("body read failed: " + err.Error())
			close(rec.cancelled)
			return err
		}
	}
	if r.URL.Query().Get("stage") == "midbody" {
		select {
		case <-time.After(150 * time.Millisecond):
		case <-r.Context().Done():
		}
		if _, err := io.WriteString(w, "part one\n"); err != nil {
			rec.how.Store("write failed: " + err.Error())
			close(rec.cancelled)
			return err
		}
		_ = http.NewResponseController(w).Flush()
	}
	select {
	case <-r.Context().Done():
		rec.how.Store("context: " + r.Context().Err().Error())
		close(rec.cancelled)
		return r.Context().Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("client never went away")
	}
}

// discStage is one way for a client to leave.
type discStage struct {
	name string
	// upload: the request is a POST with Expect: 100-continue whose body
	// is cut after its first half. It gets no 102 (the body is not in),
	// and the client leaves after uploadWait.
	upload bool
	// leaveAfter102s: leave after this many 102s; 0 leaves before any.
	leaveAfter102s int
	// leaveInBody: leave after the first part of the final response body.
	leaveInBody bool
}

var discStages = []discStage{
	{name: "before the first 102"},
	{name: "between 102s", leaveAfter102s: 2},
	{name: "mid body", leaveInBody: true},
	{name: "mid upload", upload: true},
}

// uploadWait is how long a client that cut its upload waits before it
// leaves: many intervals of the "others" route, in which no 102 may come.
const uploadWait = 300 * time.Millisecond

func (s discStage) query(id string) string {
	q := "id=" + id + "&stage="
	switch {
	case s.leaveInBody:
		q += "midbody"
	case s.upload:
		q += "upload"
	case s.leaveAfter102s == 0:
		q += "before"
	default:
		q += "between"
	}
	return q
}

func TestClientDisconnectsAtEveryStage(t *testing.T) {
	harness.LeakCheck(t)
	harness.SetBehaviour(t, "disc", discBehaviour)
	// "before" requests get a long delay so that the client is surely gone
	// first; the others get 102s every 20 ms, at most 4 (quic-go's client
	// gives up after 5).
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	@before query stage=before
	@others not query stage=before
	route {
		rel_request_over
		processing @before {
			delay 2s
			header X-Progress "{http.processing.count}"
		}
		processing @others {
			delay 20ms
			interval 20ms
			max 4
			header X-Progress "{http.processing.count}"
		}
		test_work disc
	}
`))
	h2 := harness.H2Client()
	defer h2.CloseIdleConnections()
	h3, closeH3 := harness.H3Client()
	defer closeH3()

	n := 0
	for _, stage := range discStages {
		for _, proto := range []string{"HTTP1.1", "HTTP2", "HTTP3"} {
			n++
			id := fmt.Sprint(n)
			t.Run(stage.name+"/"+proto, func(t *testing.T) {
				rec := newDiscRecord(t, id)
				sentBefore := harness.InterimsSent(t)
				var seen int
				switch proto {
				case "HTTP1.1":
					seen = discRawClient(t, harness.Loopback(port), stage, id)
				case "HTTP2":
					seen = discGoClient(t, h2, fmt.Sprintf("https://127.0.0.1:%d", tlsPort), stage, id)
				case "HTTP3":
					seen = discGoClient(t, h3, fmt.Sprintf("https://127.0.0.1:%d", tlsPort), stage, id)
				}
				// max 4 bounds what any client sees; the rest is how far
				// each stage lets the request go before the client leaves.
				switch {
				case seen > 4:
					t.Fatalf("client saw %d 102s, more than max 4", seen)
				case stage.leaveInBody && seen < 1:
					t.Fatalf("client saw no 102 in the 150 ms before the final status")
				case seen < stage.leaveAfter102s:
					t.Fatalf("client saw %d 102s before leaving, wanted %d", seen, stage.leaveAfter102s)
				case stage.leaveAfter102s == 0 && !stage.leaveInBody && seen != 0:
					t.Fatalf("client saw %d 102s before the 2 s delay, or during its upload", seen)
				}
				select {
				case <-rec.cancelled:
				case <-time.After(20 * time.Second):
					t.Fatal("the next handler never heard that the client had gone")
				}
				select {
				case <-rec.returned:
				case <-time.After(20 * time.Second):
					t.Fatal("the next handler did not return")
				}
				select {
				case <-rec.over:
				case <-time.After(20 * time.Second):
					t.Fatal("processing did not return")
				}
				// A cut upload shows as a failed body read; otherwise the
				// handler, waiting, sees its context cancelled.
				how, _ := rec.how.Load().(string)
				wantHow := "context: " + context.Canceled.Error()
				if stage.upload {
					wantHow = "body read failed: "
				}
				if !strings.HasPrefix(how, wantHow) {
					t.Errorf("the next handler learnt of it by %q, want %q", how, wantHow)
				}
				t.Logf("next handler: %v; client saw %d 102s", how, seen)
				// The request is over: no fire of the wheel may send again.
				relAssertNoMoreInterims(t, 100*time.Millisecond)
				if stage.leaveAfter102s == 0 && !stage.leaveInBody {
					if d := harness.InterimsSent(t) - sentBefore; d != 0 {
						t.Errorf("%v 102s sent for a request whose client left before the delay", d)
					}
				}
			})
		}
	}
}

// discRawClient plays one stage over a raw HTTP/1.1 connection and returns
// how many 102s it read before closing.
func discRawClient(t *testing.T, address string, stage discStage, id string) int {
	t.Helper()
	conn, err := harness.OpenRaw(address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // leaving
	target := "/?" + stage.query(id)
	if stage.upload {
		if err := conn.Send("POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 20000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if line := discReadHead(t, conn); line != "HTTP/1.1 100 Continue" {
			t.Fatalf("want 100 Continue first, got %q", line)
		}
		if _, err := conn.Write(make([]byte, 10000)); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := conn.Send("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	seen := 0
	switch {
	case stage.upload:
		// Whatever the server sends meanwhile.
		_ = conn.SetReadDeadline(time.Now().Add(uploadWait))
		got, _ := io.ReadAll(conn.R)
		seen = strings.Count(string(got), "HTTP/1.1 102 Processing\r\n")
	case stage.leaveAfter102s == 0 && !stage.leaveInBody:
		discAwaitHandler(t, id)
	case stage.leaveInBody:
		for {
			line := discReadHead(t, conn)
			if line == "HTTP/1.1 200 OK" {
				break
			}
			if line != "HTTP/1.1 102 Processing" {
				t.Fatalf("got %q before the final status", line)
			}
			seen++
		}
		// Chunked: the size line, then the first part.
		tp := textproto.NewReader(conn.R)
		if _, err := tp.ReadLine(); err != nil {
			t.Fatal(err)
		}
		if part, err := tp.ReadLine(); err != nil || part != "part one" {
			t.Fatalf("first part %q, %v", part, err)
		}
	default:
		for seen < stage.leaveAfter102s {
			if line := discReadHead(t, conn); line != "HTTP/1.1 102 Processing" {
				t.Fatalf("got %q, want a 102", line)
			}
			seen++
		}
	}
	return seen
}

// discStarted is closed when the next handler of request id is running.
func discStarted(t *testing.T, id string) <-chan struct{} {
	t.Helper()
	v, ok := discRecords.Load(id)
	if !ok {
		t.Fatalf("no record for request %s", id)
	}
	return v.(*discRecord).started
}

// discAwaitHandler waits until the next handler of request id is running:
// a client that leaves "before the first 102" must leave after its
// request arrived, or nothing hears of it.
func discAwaitHandler(t *testing.T, id string) {
	t.Helper()
	select {
	case <-discStarted(t, id):
	case <-time.After(20 * time.Second):
		t.Fatal("the request never reached the next handler")
	}
}

// discReadHead reads one response head and returns its status line.
func discReadHead(t *testing.T, conn *harness.RawConn) string {
	t.Helper()
	line, h, err := conn.Head()
	if err != nil {
		t.Fatalf("reading a response head: %v", err)
	}
	if strings.HasPrefix(line, "HTTP/1.1 1") && h.Get("X-Secret") != "" {
		t.Fatalf("interim %q carries the handler's field", line)
	}
	return line
}

// discGoClient plays one stage with a Go client (HTTP/2 or HTTP/3): leaving
// is cancelling the request, which resets the stream.
func discGoClient(t *testing.T, client *http.Client, base string, stage discStage, id string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int32
	enough := make(chan struct{})
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusProcessing {
				if h.Get("X-Secret") != "" {
					t.Errorf("102 carries the handler's field: %v", h)
				}
				if int(seen.Add(1)) == stage.leaveAfter102s {
					close(enough)
				}
			}
			return nil
		},
	}
	ctx = httptrace.WithClientTrace(ctx, trace)
	target := base + "/?" + stage.query(id)
	var req *http.Request
	if stage.upload {
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, target, pr)
		req.ContentLength = 20000
		go func() {
			// Half the body; the rest never comes.
			_, _ = pw.Write(make([]byte, 10000))
		}()
	} else {
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	}
	type result struct {
		res *http.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := client.Do(req)
		done <- result{res, err}
	}()
	switch {
	case stage.leaveAfter102s == 0 && !stage.leaveInBody:
		// Leaving before the request reached the handler (an HTTP/3
		// handshake on a loaded machine can take longer than any fixed
		// wait) would leave nothing to hear of it.
		select {
		case <-discStarted(t, id):
		case r := <-done:
			if r.err == nil {
				r.res.Body.Close()
			}
			t.Fatalf("request ended (%v) before the handler started", r.err)
		}
		if stage.upload {
			// A quiet period: no 102 may come while the body is cut
			// short.
			time.Sleep(uploadWait)
		}
		cancel()
		if r := <-done; r.err == nil {
			r.res.Body.Close()
			t.Fatalf("request finished with %d before the client left", r.res.StatusCode)
		}
	case stage.leaveInBody:
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		buf := make([]byte, len("part one\n"))
		if _, err := io.ReadFull(r.res.Body, buf); err != nil || string(buf) != "part one\n" {
			t.Fatalf("first part %q, %v", buf, err)
		}
		cancel()
		r.res.Body.Close()
	default:
		select {
		case <-enough:
		case r := <-done:
			if r.err == nil {
				r.res.Body.Close()
			}
			t.Fatalf("request ended (%v) before %d 102s", r.err, stage.leaveAfter102s)
		case <-time.After(20 * time.Second):
			t.Fatalf("no %d 102s", stage.leaveAfter102s)
		}
		cancel()
		if r := <-done; r.err == nil {
			r.res.Body.Close()
		}
	}
	return int(seen.Load())
}

// TestDisconnectStorm cancels hundreds of requests at random moments while
// 102s go out every millisecond and the handler keeps changing its header
// fields and streaming: the moments where a reset stream meets a 102 being
// written come up by the hundred. (When the client resets an HTTP/2
// stream, WriteHeader of a 1xx can return while x/net's frame writer still
// reads the header map, so a change to the map right after is a race.) -race fails the test on any data race; afterwards the
// server answers, and no 102 follows the last request's end.
func TestDisconnectStorm(t *testing.T) {
	harness.LeakCheck(t)
	const total = 1000
	var started atomic.Int64
	harness.SetBehaviour(t, "storm", func(w http.ResponseWriter, r *http.Request) error {
		started.Add(1)
		for i := range 40 {
			w.Header().Set("X-Step", fmt.Sprint(i))
			w.Header().Add("X-Trail", "x")
			if i == 20 {
				if _, err := io.WriteString(w, "half\n"); err != nil {
					return err
				}
				_ = http.NewResponseController(w).Flush()
			}
			select {
			case <-time.After(time.Millisecond):
			case <-r.Context().Done():
				return r.Context().Err()
			}
		}
		_, err := io.WriteString(w, "whole\n")
		return err
	})
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	@h3 protocol http/3
	@noth3 not protocol http/3
	route {
		rel_request_over
		processing @h3 {
			delay 1ms
			interval 1ms
			max 4
			header X-Progress "{http.processing.count}"
		}
		processing @noth3 {
			delay 1ms
			interval 1ms
			header X-Progress "{http.processing.count}"
		}
		test_work storm
	}
`))
	clients := stressClients()
	defer clients.close()
	// Connect every client first: a QUIC handshake abandoned half way
	// leaves the server side waiting for its idle timeout (quic-go's
	// business, not the module's), which the leak check would report.
	for _, kind := range []string{"h1", "h2c", "h2", "h3"} {
		base := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
		if kind == "h1" || kind == "h2c" {
			base = fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		res, err := clients.byKind[kind].Get(base + "/")
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	over0, started0, sent0 := relRequestsOver.Load(), started.Load(), harness.InterimsSent(t)

	rng := rand.New(rand.NewPCG(3, 4))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for range total {
		kind := []string{"raw-h1", "h1", "h2c", "h2", "h3"}[rng.IntN(5)]
		after := time.Duration(rng.IntN(40)) * time.Millisecond
		upload := rng.IntN(3) == 0
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if kind == "raw-h1" {
				stormRaw(t, harness.Loopback(port), after, upload)
				return
			}
			base := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
			if kind == "h1" || kind == "h2c" {
				base = fmt.Sprintf("http://127.0.0.1:%d", port)
			}
			ctx, cancel := context.WithTimeout(context.Background(), after)
			defer cancel()
			var body io.Reader
			method := http.MethodGet
			if upload {
				method, body = http.MethodPost, strings.NewReader(strings.Repeat("u", 5000))
			}
			req, _ := http.NewRequestWithContext(ctx, method, base+"/", body)
			res, err := clients.byKind[kind].Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	// Every request that reached the handler has left processing.
	harness.Eventually(t, "every request over", func() bool { return relRequestsOver.Load()-over0 == started.Load()-started0 })
	relAssertNoMoreInterims(t, 100*time.Millisecond)
	// The storm only proves something if requests were cut while their
	// 102s went out: cuts fall evenly over the 40 ms of a request, so
	// most reach the handler; a twentieth is a generous floor.
	reached, sent := started.Load()-started0, harness.InterimsSent(t)-sent0
	t.Logf("%d requests cut at random, %d reached the handler, %v 102s sent", total, reached, sent)
	if reached < total/20 || sent == 0 {
		t.Fatalf("%d of %d requests reached the handler and %v 102s were sent: the storm cut nothing in flight", reached, total, sent)
	}

	// And the server still works.
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"), harness.ReadToClose)
	if res.Status != 200 || string(res.Body) != "half\nwhole\n" || len(res.After) != 0 {
		t.Fatalf("after the storm: %d %q %q", res.Status, res.Body, res.After)
	}
	harness.CheckProgress(t, res, 1)
}

// stormRaw sends a request and closes the connection after the given time,
// reading whatever came meanwhile.
func stormRaw(t *testing.T, address string, after time.Duration, upload bool) {
	conn, err := harness.DialRaw(address)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	req := "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	if upload {
		req = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("u", 5000)
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(after))
	_, _ = io.Copy(io.Discard, conn)
}
