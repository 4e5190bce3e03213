// Package harness is what the module's tests share: a real Caddy loaded
// from a Caddyfile on loopback ports, test-only handlers that stand in for
// slow downstream work (the directive `test_work <name>`), raw HTTP/1
// exchanges that keep every byte, and Go clients that report every interim
// response they see. Only tests import it.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"
)

// LeakOptions ignores goroutines that Caddy and its libraries keep for the
// life of the process, whatever config is loaded, each by name. Nothing
// parked on a connection or a listener is ignored: a tunnel left copying,
// a tick blocked on a client that does not read, an accept loop of a
// server nobody stopped all count as leaks
// (TestLeakCheckCatchesGoroutinesBlockedOnConnections).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).permitWait"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.trapSignalsCrossPlatform.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.trapSignalsPosix.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/modules/caddytls.init.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*Cache).maintainAssets"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2.(*UsagePool).Delete"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/modules/caddytls.(*TLS).keepStorageClean.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/caddy/v2/modules/caddypki.(*PKI).Start.func1"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
		// The log file writer's rotation goroutine lives as long as the process.
		goleak.IgnoreAnyFunction("github.com/DeRuina/timberjack.(*Logger).millRun"),
	}
}

// ---- test-only handlers ----------------------------------------------------

// behaviours are the downstream handlers a test can put behind processing
// with the Caddyfile directive `test_work <name>`.
var (
	behavioursMu sync.Mutex
	behaviours   = map[string]caddyhttp.HandlerFunc{}
)

// SetBehaviour registers fn under name for the length of the test.
func SetBehaviour(t testing.TB, name string, fn caddyhttp.HandlerFunc) {
	t.Helper()
	behavioursMu.Lock()
	behaviours[name] = fn
	behavioursMu.Unlock()
	t.Cleanup(func() {
		behavioursMu.Lock()
		delete(behaviours, name)
		behavioursMu.Unlock()
	})
}

// testWork runs the named behaviour: the next handler of a test.
type testWork struct {
	Name string `json:"name"`
}

func (testWork) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_work", New: func() caddy.Module { return new(testWork) }}
}

func (tw testWork) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	behavioursMu.Lock()
	fn := behaviours[tw.Name]
	behavioursMu.Unlock()
	if fn == nil {
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("no behaviour %q", tw.Name))
	}
	if err := fn(w, r); err != ErrNext {
		return err
	}
	return next.ServeHTTP(w, r)
}

// ErrNext is what a behaviour returns to hand the request on to the
// handlers after `test_work` in the route (file_server, reverse_proxy), with
// the writer it was given: it then stands for work done before them.
var ErrNext = errors.New("test_work: on to the next handler")

func init() {
	caddy.RegisterModule(testWork{})
	httpcaddyfile.RegisterHandlerDirective("test_work", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		tw := new(testWork)
		if !h.Args(&tw.Name) {
			return nil, h.ArgErr()
		}
		return tw, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("test_work", httpcaddyfile.Before, "file_server")
}

// SleepThen returns a behaviour that waits d (or until the client goes)
// and then answers 200 with body.
func SleepThen(d time.Duration, body string) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return r.Context().Err()
		}
		w.Header().Set("Content-Type", "text/plain")
		_, err := io.WriteString(w, body)
		return err
	}
}

// InterimCountVar is the request variable that holds how many 102s the
// module sent for the request (processing.InterimCountVar; the harness
// cannot import the module).
const InterimCountVar = "processing.interim_count"

// InterimsSoFar is how many 102s the module has sent for r so far, as its
// request variable says (it prints as its digits); 0 before the module ran.
func InterimsSoFar(r *http.Request) int {
	v := caddyhttp.GetVar(r.Context(), InterimCountVar)
	if v == nil {
		return 0
	}
	n, _ := strconv.Atoi(fmt.Sprint(v))
	return n
}

// AwaitInterims waits until the module has sent n 102s for r: the signal a
// behaviour waits for instead of sleeping through a guessed number of
// intervals. It gives up when the client goes or after RawDeadline.
func AwaitInterims(r *http.Request, n int) error {
	deadline := time.NewTimer(RawDeadline)
	defer deadline.Stop()
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for InterimsSoFar(r) < n {
		select {
		case <-poll.C:
		case <-r.Context().Done():
			return r.Context().Err()
		case <-deadline.C:
			return fmt.Errorf("%d of %d 102s sent before the deadline", InterimsSoFar(r), n)
		}
	}
	return nil
}

// AfterInterims returns a behaviour that answers 200 with body once n 102s
// went out for the request: the count is the test's, not the machine's
// speed.
func AfterInterims(n int, body string) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := AwaitInterims(r, n); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "text/plain")
		_, err := io.WriteString(w, body)
		return err
	}
}

// WriteAfterInterims is a next handler that waits until n 102s went out,
// then writes body without asking for its header map.
func WriteAfterInterims(n int, body string) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := AwaitInterims(r, n); err != nil {
			return err
		}
		_, err := io.WriteString(w, body)
		return err
	}
}

// WriteAfter is a next handler that waits d, then writes body without
// asking for its header map.
func WriteAfter(d time.Duration, body string) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(d)
		_, err := io.WriteString(w, body)
		return err
	}
}

// ---- running Caddy ---------------------------------------------------------

// FreePort returns a loopback TCP port that was free a moment ago; the UDP
// port of the same number is checked too, for HTTP/3.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// GlobalOptions keeps Caddy's state in a temporary folder and off the
// network: no admin endpoint, no ACME, an internal CA that is not installed.
func GlobalOptions(t testing.TB) string {
	return GlobalOptionsWith(t, "log {\n\t\tlevel ERROR\n\t}")
}

// GlobalOptionsWith is GlobalOptions with extra lines (such as a log block)
// in place of the default quiet log.
func GlobalOptionsWith(t testing.TB, extra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	local_certs
	auto_https disable_redirects
	storage file_system %s
	%s
	servers {
		protocols h1 h2 h2c h3
	}
}
`, StorageDir(t), extra)
}

// StorageDir is a folder for Caddy's storage that is removed when the test
// ends, as far as possible: certmagic's background work may still write
// to it after Caddy stops, which would make t.TempDir's cleanup fail the
// test.
func StorageDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "caddy-processing-storage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// adapt turns a Caddyfile into JSON config.
func Adapt(t testing.TB, caddyfileText string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfileText)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "not formatted") {
			t.Logf("adapter warning: %s", w.String())
		}
	}
	return cfg
}

// StartCaddy loads the site blocks behind the test's global options and
// stops Caddy when the test ends. Use {PORT}, {TLSPORT} in sites; it
// returns the two ports.
func StartCaddy(t testing.TB, sites string) (port, tlsPort int) {
	t.Helper()
	return StartCaddyGlobal(t, GlobalOptions(t), sites)
}

// StartCaddyGlobal is StartCaddy with the given global options block.
func StartCaddyGlobal(t testing.TB, global, sites string) (port, tlsPort int) {
	t.Helper()
	port, tlsPort = FreePort(t), FreePort(t)
	usesTLS := strings.Contains(sites, "https://127.0.0.1:{TLSPORT}")
	text := strings.ReplaceAll(global+sites, "{PORT}", strconv.Itoa(port))
	text = strings.ReplaceAll(text, "{TLSPORT}", strconv.Itoa(tlsPort))
	LoadConfig(t, Adapt(t, text))
	if usesTLS {
		WaitForTLS(t, tlsPort)
	}
	return port, tlsPort
}

// CheckRefusedAt adapts a site whose body (after the address line, line 1)
// holds a bad directive, and checks that the error says want and ends with
// the Caddyfile line.
func CheckRefusedAt(t testing.TB, body string, line int, want string) {
	t.Helper()
	text := "http://127.0.0.1:8080 {\n" + body + "\trespond ok\n}\n"
	_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err == nil {
		t.Fatalf("accepted:\n%s", text)
	}
	msg := err.Error()
	if !strings.Contains(msg, want) {
		t.Errorf("error %q\ndoes not say %q", msg, want)
	}
	// Caddy's Dispenser puts "<file>:<line>" at the end; the suffix
	// check keeps "Caddyfile:3" from matching "Caddyfile:30".
	if where := fmt.Sprintf(", at Caddyfile:%d", line); !strings.HasSuffix(msg, where) {
		t.Errorf("error %q\ndoes not end with %q", msg, where)
	}
}

// ValidateJSONConfig decodes, provisions and validates cfg the way
// `caddy validate` does, without starting any server.
func ValidateJSONConfig(t testing.TB, cfg []byte) error {
	t.Helper()
	var c caddy.Config
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatalf("config is not JSON: %v\n%s", err, cfg)
	}
	return caddy.Validate(&c)
}

// JSONConfigWithHandler is a whole Caddy config whose only route runs the
// processing handler with the given fields, then answers.
func JSONConfigWithHandler(t testing.TB, fields string) []byte {
	t.Helper()
	handler := `{"handler": "processing"`
	if fields != "" {
		handler += ", " + fields
	}
	handler += "}"
	storage := MustJSON(t, t.TempDir())
	return []byte(`{
	"admin": {"disabled": true},
	"storage": {"module": "file_system", "root": ` + string(storage) + `},
	"apps": {"http": {"servers": {"bad": {
		"listen": ["127.0.0.1:0"],
		"routes": [{"handle": [` + handler + `, {"handler": "static_response", "body": "ok"}]}]
	}}}}
}`)
}

// ReadJSONLines parses a JSON-lines log file.
func ReadJSONLines(t testing.TB, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// WaitForTLS waits until Caddy's internal CA has issued the site's
// certificate, which happens in the background after the config loads.
func WaitForTLS(t testing.TB, port int) {
	t.Helper()
	Eventually(t, "the site certificate", func() bool {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// LoadConfig runs Caddy with JSON config until the test ends.
func LoadConfig(t testing.TB, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() {
		// Caddy's graceful shutdown waits for open client connections,
		// and an idle HTTP/2 connection stays open until its client
		// closes it.
		CloseClientConnections()
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
}

// Reload replaces the running config with cfg, as `caddy reload` does;
// LoadConfig's cleanup stops the new one.
func Reload(t testing.TB, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("reloading config: %v\n%s", err, cfg)
	}
}

// ProtocolSites serves the same route over cleartext (HTTP/1.1 and h2c)
// and TLS (HTTP/1.1, HTTP/2 and HTTP/3).
func ProtocolSites(route string) string {
	return `
http://127.0.0.1:{PORT} {
` + route + `
}
https://127.0.0.1:{TLSPORT} {
	tls internal
` + route + `
}
`
}

// ---- checks shared by the reliability tests ---------------------------------

// LeakCheck verifies, once Caddy has stopped at the end of the test, that
// no goroutine of the test is left: no tick, no handler, no tunnel. Call it
// before StartCaddy, so that its cleanup runs after Caddy's stop.
func LeakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure says more than the goroutines would
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		goleak.VerifyNone(t, LeakOptions()...)
	})
}

// CheckProgress asserts that the interims are exactly the numbered 102s
// that `header X-Progress {http.processing.count}` makes, in order.
func CheckProgress(t testing.TB, res *RawResponse, atLeast int) {
	t.Helper()
	if len(res.Interims) < atLeast {
		t.Fatalf("%d interim responses, want at least %d:\n%s", len(res.Interims), atLeast, res.Wire)
	}
	for i, in := range res.Interims {
		if want := Progress102(i + 1); in.Raw != want {
			t.Fatalf("interim %d is %q, want %q", i, in.Raw, want)
		}
	}
}

// Progress102 is the nth 102 on the wire under
// `header X-Progress "{http.processing.count}"`, the numbering most tests
// configure.
func Progress102(n int) string {
	return fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Progress: %d\r\n\r\n", n)
}

// CheckProgressHeader checks that the header of the nth 102, as a Go
// client reports it, holds exactly the X-Progress field with its count.
func CheckProgressHeader(n int, h http.Header) error {
	if len(h) != 1 || len(h["X-Progress"]) != 1 || h.Get("X-Progress") != strconv.Itoa(n) {
		return fmt.Errorf("102 number %d carries %v", n, h)
	}
	return nil
}

// ---- raw HTTP/1.x ----------------------------------------------------------

// loopback is the address of a test server's port.
func Loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// RawGet is a GET request head for a raw client, with Connection: close and
// the given header fields ("Name: value").
func RawGet(path string, fields ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// BareProcessing is the exact bytes of a 102 with no configured fields.
const BareProcessing = "HTTP/1.1 102 Processing\r\n\r\n"

// RawResponse is everything a raw client read for one request: each
// interim response as it was on the wire, then the final one.
type RawResponse struct {
	Interims []RawInterim
	Status   int
	Header   http.Header
	Body     []byte
	// Wire is every byte of the response, interims included, in order.
	Wire []byte
	// After is what the server sent after the final response until it
	// closed the connection (read with ReadToClose only): a 102 that
	// outlived its request would be there.
	After []byte
	// Elapsed runs from the request written to the last byte read.
	Elapsed time.Duration
}

type RawInterim struct {
	Code   int
	Header http.Header
	At     time.Duration // since the request was written
	Raw    string
}

// RawOption changes what RawExchange and RawRequest read.
type RawOption int

// ReadToClose reads on after the final response until the server closes
// the connection, into RawResponse.After.
const ReadToClose RawOption = 1

// RawDeadline bounds a whole raw exchange: generous, so that only a hang
// reaches it.
const RawDeadline = 90 * time.Second

// DialRaw opens a connection for a raw client, with RawDeadline set.
func DialRaw(address string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(RawDeadline))
	return conn, nil
}

// RawConn is a raw HTTP/1 client connection for an exchange that acts
// between writing and reading (stops Caddy, sends a body slowly, leaves
// mid-response, tunnels after a 101). All reads go through its one reader
// R, so that no byte after a response is lost in another buffer.
type RawConn struct {
	net.Conn
	R *bufio.Reader
	// Start is when the first request bytes were sent (Send), the origin
	// of the RawInterim.At times.
	Start time.Time
}

// OpenRaw dials address for a RawConn, with RawDeadline set; for use off
// the test's goroutine. The caller closes it.
func OpenRaw(address string) (*RawConn, error) {
	conn, err := DialRaw(address)
	if err != nil {
		return nil, err
	}
	return &RawConn{Conn: conn, R: bufio.NewReader(conn)}, nil
}

// DialRawConn is OpenRaw on the test's goroutine: it fails the test if the
// dial fails, and closes the connection when the test ends.
func DialRawConn(t testing.TB, address string) *RawConn {
	t.Helper()
	c, err := OpenRaw(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Send writes s, starting the clock at the first bytes sent.
func (c *RawConn) Send(s string) error {
	if c.Start.IsZero() {
		c.Start = time.Now()
	}
	_, err := io.WriteString(c.Conn, s)
	return err
}

// Response reads one response, interims first (ReadRawResponse); head
// says it answers a HEAD request.
func (c *RawConn) Response(head bool) (*RawResponse, error) {
	res, err := ReadRawResponse(c.R, c.Start, head)
	res.Elapsed = time.Since(c.Start)
	return res, err
}

// Head reads one response's head (status line and header fields), for a
// client that acts after each: leaving after so many 102s.
func (c *RawConn) Head() (statusLine string, h http.Header, err error) {
	tp := textproto.NewReader(c.R)
	if statusLine, err = tp.ReadLine(); err != nil {
		return "", nil, err
	}
	mh, err := tp.ReadMIMEHeader()
	return statusLine, http.Header(mh), err
}

// Rest reads what the server sends until it closes the connection. A
// reset after the response is not an error: Go resets a connection it
// closes with request bytes unread.
func (c *RawConn) Rest() ([]byte, error) {
	b, err := io.ReadAll(c.R)
	if IsConnReset(err) {
		err = nil
	}
	return b, err
}

// RawExchange writes req on a fresh connection to address and reads the
// interim responses and the final response as raw bytes. A request the
// server refuses half-written (it may answer and close first) is not an
// error: what it sent is the result. For use off the test's goroutine;
// RawRequest fails the test instead.
func RawExchange(address, req string, opts ...RawOption) (*RawResponse, error) {
	c, err := OpenRaw(address)
	if err != nil {
		return &RawResponse{}, err
	}
	defer c.Close()
	writeErr := c.Send(req)
	res, err := ReadRawResponse(c.R, c.Start, strings.HasPrefix(req, "HEAD "))
	if err == nil && slices.Contains(opts, ReadToClose) {
		res.After, err = c.Rest()
	}
	res.Elapsed = time.Since(c.Start)
	if err != nil && writeErr != nil {
		err = fmt.Errorf("%w (writing the request: %v)", err, writeErr)
	}
	return res, err
}

// RawRequest is RawExchange on the test's goroutine: any error fails the
// test.
func RawRequest(t testing.TB, address, req string, opts ...RawOption) *RawResponse {
	t.Helper()
	res, err := RawExchange(address, req, opts...)
	if err != nil {
		t.Fatalf("reading response: %v\nread so far:\n%s", err, res.Wire)
	}
	return res
}

// RawUpload writes head on a fresh connection, then body in pieces evenly
// spread over spread, while it reads the response, so that each interim's
// At is when it arrived. With Expect: 100-continue in head, the body waits
// for the 100 Continue, which must be the first thing the server sends and
// is not among the interims. lastWrite is when the last piece began to be
// written, since head was: the server cannot have the whole body before
// then.
func RawUpload(address, head string, body []byte, pieces int, spread time.Duration) (res *RawResponse, lastWrite time.Duration, err error) {
	c, err := OpenRaw(address)
	if err != nil {
		return &RawResponse{}, 0, err
	}
	defer c.Close()
	if err := c.Send(head); err != nil {
		return &RawResponse{}, 0, err
	}
	if strings.Contains(strings.ToLower(head), "\r\nexpect: 100-continue\r\n") {
		line, h, err := c.Head()
		if err != nil {
			return &RawResponse{}, 0, err
		}
		if line != "HTTP/1.1 100 Continue" || len(h) != 0 {
			return &RawResponse{}, 0, fmt.Errorf("got %q %v before the body, want a bare 100 Continue", line, h)
		}
	}
	written := make(chan error, 1)
	go func() {
		size := (len(body) + pieces - 1) / pieces
		for i := 0; i < len(body); i += size {
			if i > 0 {
				time.Sleep(spread / time.Duration(pieces))
			}
			if i+size >= len(body) {
				lastWrite = time.Since(c.Start)
			}
			if _, err := c.Write(body[i:min(i+size, len(body))]); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	res, err = c.Response(false)
	if werr := <-written; err == nil && werr != nil {
		err = fmt.Errorf("writing the body: %w", werr)
	}
	return res, lastWrite, err
}

// IsConnReset reports a connection the server reset after answering, as Go
// does when it closes with unread request bytes.
func IsConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// ReadRawResponse reads one response from br: its interim responses, then
// the final one. It reads no byte past the final response, so that what
// follows (the next response on the connection, a tunnel's bytes) is
// still in br. A connection closed before any byte gives io.EOF.
func ReadRawResponse(br *bufio.Reader, start time.Time, head bool) (*RawResponse, error) {
	res := &RawResponse{}
	var wire bytes.Buffer
	defer func() { res.Wire = wire.Bytes() }()
	for {
		mark := wire.Len()
		if err := readRawLines(br, &wire); err != nil {
			if err == io.EOF && wire.Len() > mark {
				err = io.ErrUnexpectedEOF
			}
			return res, err
		}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(wire.Bytes()[mark:])))
		line, _ := tp.ReadLine()
		proto, rest, _ := strings.Cut(line, " ")
		codeStr, _, _ := strings.Cut(rest, " ")
		code, err := strconv.Atoi(codeStr)
		if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
			return res, fmt.Errorf("malformed status line %q", line)
		}
		mh, err := tp.ReadMIMEHeader()
		if err != nil {
			return res, err
		}
		if code >= 100 && code <= 199 && code != 101 {
			res.Interims = append(res.Interims, RawInterim{
				Code: code, Header: http.Header(mh), At: time.Since(start),
				Raw: wire.String()[mark:],
			})
			continue
		}
		res.Status = code
		res.Header = http.Header(mh)
		if head || code == 204 || code == 304 || code == 101 {
			return res, nil
		}
		res.Body, err = readRawBody(br, &wire, res.Header)
		return res, err
	}
}

// readRawLines reads lines up to and including an empty one (the end of a
// header section) into wire.
func readRawLines(br *bufio.Reader, wire *bytes.Buffer) error {
	for {
		line, err := br.ReadString('\n')
		wire.WriteString(line)
		if err != nil {
			return err
		}
		if line == "\r\n" || line == "\n" {
			return nil
		}
	}
}

// readRawBody reads a response body framed by Content-Length, by chunks
// or by the end of the connection, keeping every byte in wire.
func readRawBody(br *bufio.Reader, wire *bytes.Buffer, h http.Header) ([]byte, error) {
	readN := func(n int64) ([]byte, error) {
		var b bytes.Buffer
		_, err := io.CopyN(io.MultiWriter(&b, wire), br, n)
		return b.Bytes(), err
	}
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, err
		}
		return readN(n)
	}
	if !strings.EqualFold(h.Get("Transfer-Encoding"), "chunked") {
		b, err := io.ReadAll(io.TeeReader(br, wire))
		return b, err
	}
	var body []byte
	for {
		line, err := br.ReadString('\n')
		wire.WriteString(line)
		if err != nil {
			return body, err
		}
		sizeStr, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		size, err := strconv.ParseInt(sizeStr, 16, 64)
		if err != nil {
			return body, fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			return body, readRawLines(br, wire) // trailers
		}
		chunk, err := readN(size)
		body = append(body, chunk...)
		if err != nil {
			return body, err
		}
		if end, err := readN(2); err != nil || string(end) != "\r\n" {
			return body, fmt.Errorf("chunk not ended by CRLF: %q, %v", end, err)
		}
	}
}

// ---- Go clients ------------------------------------------------------------

// seen is what a Go client reported for one request.
type Seen struct {
	Interims []SeenInterim
	Status   int
	Header   http.Header
	Trailer  http.Header
	Body     []byte
	Proto    string
}

type SeenInterim struct {
	Code   int
	Header http.Header
}

// TracedDo sends req with client and records each 1xx through
// httptrace.ClientTrace.Got1xxResponse.
func TracedDo(t testing.TB, client *http.Client, req *http.Request) (*Seen, error) {
	t.Helper()
	s := &Seen{}
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			s.Interims = append(s.Interims, SeenInterim{Code: code, Header: http.Header(h).Clone()})
			mu.Unlock()
			return nil
		},
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	res, err := client.Do(req)
	if err != nil {
		return s, err
	}
	defer res.Body.Close()
	s.Body, err = io.ReadAll(res.Body)
	mu.Lock()
	defer mu.Unlock()
	s.Status, s.Header, s.Trailer, s.Proto = res.StatusCode, res.Header, res.Trailer, res.Proto
	return s, err
}

func (s *Seen) Count(code int) int {
	n := 0
	for _, i := range s.Interims {
		if i.Code == code {
			n++
		}
	}
	return n
}

// clientTransports are the transports of every client made by the helpers
// below, so that their idle connections can be closed before Caddy stops.
var (
	clientTransportsMu sync.Mutex
	clientTransports   []interface{ CloseIdleConnections() }
)

func TrackTransport(tr interface{ CloseIdleConnections() }) {
	clientTransportsMu.Lock()
	clientTransports = append(clientTransports, tr)
	clientTransportsMu.Unlock()
}

func CloseClientConnections() {
	clientTransportsMu.Lock()
	defer clientTransportsMu.Unlock()
	for _, tr := range clientTransports {
		tr.CloseIdleConnections()
	}
	clientTransports = nil
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// Clients for each protocol. The TLS ones trust anything: the test's CA is
// Caddy's internal one, made fresh in a temporary folder.
func H1Client() *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	TrackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func H2Client() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	TrackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func H2CClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	TrackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func H3Client() (*http.Client, func()) {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}}
	TrackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, func() { tr.Close() }
}

// ---- small helpers ---------------------------------------------------------

// MustJSON marshals v or fails the test.
func MustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually polls cond until it holds or the generous deadline passes.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// EnvCount is the count an environment variable sets for a long test
// (FLOOD_REQUESTS, STRESS_REQUESTS), or def when it is unset or empty. Any
// other value than a positive whole number fails the test: a typo must not
// run zero cases and pass.
func EnvCount(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}

// WithTimeout is a context for one client request.
func WithTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---- upstreams -------------------------------------------------------------

// Upstream serves h on a loopback port until the test ends, for
// reverse_proxy to forward to, and returns its address. Its close waits
// for every request it is serving (a hijacked connection is the handler's
// to close).
func Upstream(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// SlowUpstream is an Upstream that sets the given header fields ("Name:
// value") at once, then waits d (or until the client goes) and answers 200
// with body: the slow backend behind processing.
func SlowUpstream(t testing.TB, d time.Duration, body string, fields ...string) string {
	t.Helper()
	return Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range fields {
			name, value, _ := strings.Cut(f, ":")
			w.Header().Add(name, strings.TrimSpace(value))
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, body)
	}))
}
