package processing

// The test harness: a real Caddy loaded from a Caddyfile on loopback ports,
// test-only handlers that stand in for slow downstream work, and clients
// that report every interim response they see.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end: no tick, no request goroutine, no server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leakOptions()...)
}

// leakOptions ignores goroutines that Caddy and its libraries keep for the
// life of the process, whatever config is loaded, each by name. Nothing
// parked on a connection or a listener is ignored: a tunnel left copying,
// a tick blocked on a client that does not read, an accept loop of a
// server nobody stopped all count as leaks
// (TestLeakCheckCatchesGoroutinesBlockedOnConnections).
func leakOptions() []goleak.Option {
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

// setBehaviour registers fn under name for the length of the test.
func setBehaviour(t testing.TB, name string, fn caddyhttp.HandlerFunc) {
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

func (tw testWork) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	behavioursMu.Lock()
	fn := behaviours[tw.Name]
	behavioursMu.Unlock()
	if fn == nil {
		return caddyhttp.Error(http.StatusNotFound, fmt.Errorf("no behaviour %q", tw.Name))
	}
	return fn(w, r)
}

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

// sleepThen returns a behaviour that waits d (or until the client goes)
// and then answers 200 with body.
func sleepThen(d time.Duration, body string) caddyhttp.HandlerFunc {
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

// writeAfter is a next handler that waits d, then writes body without
// asking for its header map.
func writeAfter(d time.Duration, body string) caddyhttp.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(d)
		_, err := io.WriteString(w, body)
		return err
	}
}

// ---- running Caddy ---------------------------------------------------------

// freePort returns a loopback TCP port that was free a moment ago; the UDP
// port of the same number is checked too, for HTTP/3.
func freePort(t testing.TB) int {
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

// globalOptions keeps Caddy's state in a temporary folder and off the
// network: no admin endpoint, no ACME, an internal CA that is not installed.
func globalOptions(t testing.TB) string {
	return globalOptionsWith(t, "log {\n\t\tlevel ERROR\n\t}")
}

// globalOptionsWith is globalOptions with extra lines (such as a log block)
// in place of the default quiet log.
func globalOptionsWith(t testing.TB, extra string) string {
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
`, storageDir(t), extra)
}

// storageDir is a folder for Caddy's storage that is removed when the test
// ends, as far as possible: certmagic's background work may still write
// to it after Caddy stops, which would make t.TempDir's cleanup fail the
// test.
func storageDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "caddy-processing-storage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// adapt turns a Caddyfile into JSON config.
func adapt(t testing.TB, caddyfileText string) []byte {
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

// startCaddy loads the site blocks behind the test's global options and
// stops Caddy when the test ends. Use {PORT}, {TLSPORT} in sites; it
// returns the two ports.
func startCaddy(t testing.TB, sites string) (port, tlsPort int) {
	t.Helper()
	return startCaddyGlobal(t, globalOptions(t), sites)
}

// startCaddyGlobal is startCaddy with the given global options block.
func startCaddyGlobal(t testing.TB, global, sites string) (port, tlsPort int) {
	t.Helper()
	port, tlsPort = freePort(t), freePort(t)
	usesTLS := strings.Contains(sites, "https://127.0.0.1:{TLSPORT}")
	text := strings.ReplaceAll(global+sites, "{PORT}", strconv.Itoa(port))
	text = strings.ReplaceAll(text, "{TLSPORT}", strconv.Itoa(tlsPort))
	loadConfig(t, adapt(t, text))
	if usesTLS {
		waitForTLS(t, tlsPort)
	}
	return port, tlsPort
}

// waitForTLS waits until Caddy's internal CA has issued the site's
// certificate, which happens in the background after the config loads.
func waitForTLS(t testing.TB, port int) {
	t.Helper()
	eventually(t, "the site certificate", func() bool {
		conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// loadConfig runs Caddy with JSON config until the test ends.
func loadConfig(t testing.TB, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() {
		// Caddy's graceful shutdown waits for open client connections,
		// and an idle HTTP/2 connection stays open until its client
		// closes it.
		closeClientConnections()
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping Caddy: %v", err)
		}
	})
}

// protocolSites serves the same route over cleartext (HTTP/1.1 and h2c)
// and TLS (HTTP/1.1, HTTP/2 and HTTP/3).
func protocolSites(route string) string {
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

// relLeakCheck verifies, once Caddy has stopped at the end of the test, that
// no goroutine of the test is left: no tick, no handler, no tunnel. Call it
// before startCaddy, so that its cleanup runs after Caddy's stop.
func relLeakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure says more than the goroutines would
		}
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		goleak.VerifyNone(t, leakOptions()...)
	})
}

// relInterimsSent is the module's process-wide count of 102s sent, read
// through a registry as Prometheus would scrape it.
func relInterimsSent(t testing.TB) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(interimsSent)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// relAssertNoMoreInterims checks that the 102 count stays where it is for
// a while: no timer of a finished request fires.
func relAssertNoMoreInterims(t testing.TB, quiet time.Duration) {
	t.Helper()
	before := relInterimsSent(t)
	time.Sleep(quiet)
	if after := relInterimsSent(t); after != before {
		t.Errorf("%v 102s sent after every request had ended", after-before)
	}
}

// relCheckProgress asserts that the interims are exactly the numbered 102s
// that `header X-Progress {http.processing.count}` makes, in order.
func relCheckProgress(t testing.TB, res *rawResponse, atLeast int) {
	t.Helper()
	if len(res.Interims) < atLeast {
		t.Fatalf("%d interim responses, want at least %d:\n%s", len(res.Interims), atLeast, res.Wire)
	}
	for i, in := range res.Interims {
		if want := progress102(i + 1); in.Raw != want {
			t.Fatalf("interim %d is %q, want %q", i, in.Raw, want)
		}
	}
}

// progress102 is the nth 102 on the wire under
// `header X-Progress "{http.processing.count}"`, the numbering most tests
// configure.
func progress102(n int) string {
	return fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Progress: %d\r\n\r\n", n)
}

// checkProgressHeader checks that the header of the nth 102, as a Go
// client reports it, holds exactly the X-Progress field with its count.
func checkProgressHeader(n int, h http.Header) error {
	if len(h) != 1 || len(h["X-Progress"]) != 1 || h.Get("X-Progress") != strconv.Itoa(n) {
		return fmt.Errorf("102 number %d carries %v", n, h)
	}
	return nil
}

// ---- raw HTTP/1.x ----------------------------------------------------------

// loopback is the address of a test server's port.
func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// rawGet is a GET request head for a raw client, with Connection: close and
// the given header fields ("Name: value").
func rawGet(path string, fields ...string) string {
	var b strings.Builder
	b.WriteString("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
	for _, f := range fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// bareProcessing is the exact bytes of a 102 with no configured fields.
const bareProcessing = "HTTP/1.1 102 Processing\r\n\r\n"

// rawResponse is everything a raw client read for one request: each
// interim response as it was on the wire, then the final one.
type rawResponse struct {
	Interims []rawInterim
	Status   int
	Header   http.Header
	Body     []byte
	// Wire is every byte of the response, interims included, in order.
	Wire []byte
	// After is what the server sent after the final response until it
	// closed the connection (read with readToClose only): a 102 that
	// outlived its request would be there.
	After []byte
	// Elapsed runs from the request written to the last byte read.
	Elapsed time.Duration
}

type rawInterim struct {
	Code   int
	Header http.Header
	At     time.Duration // since the request was written
	Raw    string
}

// rawOption changes what rawExchange and rawRequest read.
type rawOption int

// readToClose reads on after the final response until the server closes
// the connection, into rawResponse.After.
const readToClose rawOption = 1

// rawDeadline bounds a whole raw exchange: generous, so that only a hang
// reaches it.
const rawDeadline = 90 * time.Second

// dialRaw opens a connection for a raw client, with rawDeadline set.
func dialRaw(address string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(rawDeadline))
	return conn, nil
}

// rawExchange writes req on a fresh connection to address and reads the
// interim responses and the final response as raw bytes. A request the
// server refuses half-written (it may answer and close first) is not an
// error: what it sent is the result. For use off the test's goroutine;
// rawRequest fails the test instead.
func rawExchange(address, req string, opts ...rawOption) (*rawResponse, error) {
	conn, err := dialRaw(address)
	if err != nil {
		return &rawResponse{}, err
	}
	defer conn.Close()
	start := time.Now()
	_, writeErr := io.WriteString(conn, req)
	br := bufio.NewReader(conn)
	res, err := readRawResponse(br, start, strings.HasPrefix(req, "HEAD "))
	if err == nil && slices.Contains(opts, readToClose) {
		// Go resets a connection it closes with request bytes unread.
		if res.After, err = io.ReadAll(br); isConnReset(err) {
			err = nil
		}
	}
	res.Elapsed = time.Since(start)
	if err != nil && writeErr != nil {
		err = fmt.Errorf("%w (writing the request: %v)", err, writeErr)
	}
	return res, err
}

// rawRequest is rawExchange on the test's goroutine: any error fails the
// test.
func rawRequest(t testing.TB, address, req string, opts ...rawOption) *rawResponse {
	t.Helper()
	res, err := rawExchange(address, req, opts...)
	if err != nil {
		t.Fatalf("reading response: %v\nread so far:\n%s", err, res.Wire)
	}
	return res
}

// isConnReset reports a connection the server reset after answering, as Go
// does when it closes with unread request bytes.
func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// readRawResponse reads one response from br: its interim responses, then
// the final one. It reads no byte past the final response, so that what
// follows (the next response on the connection, a tunnel's bytes) is
// still in br. A connection closed before any byte gives io.EOF.
func readRawResponse(br *bufio.Reader, start time.Time, head bool) (*rawResponse, error) {
	res := &rawResponse{}
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
			res.Interims = append(res.Interims, rawInterim{
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
type seen struct {
	Interims []seenInterim
	Status   int
	Header   http.Header
	Trailer  http.Header
	Body     []byte
	Proto    string
}

type seenInterim struct {
	Code   int
	Header http.Header
}

// tracedDo sends req with client and records each 1xx through
// httptrace.ClientTrace.Got1xxResponse.
func tracedDo(t testing.TB, client *http.Client, req *http.Request) (*seen, error) {
	t.Helper()
	s := &seen{}
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			s.Interims = append(s.Interims, seenInterim{Code: code, Header: http.Header(h).Clone()})
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

func (s *seen) count(code int) int {
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

func trackTransport(tr interface{ CloseIdleConnections() }) {
	clientTransportsMu.Lock()
	clientTransports = append(clientTransports, tr)
	clientTransportsMu.Unlock()
}

func closeClientConnections() {
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
func h1Client() *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	trackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func h2Client() *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	trackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func h2cClient() *http.Client {
	tr := &http.Transport{}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	trackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func h3Client() (*http.Client, func()) {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}}
	trackTransport(tr)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}, func() { tr.Close() }
}

// stressClientSet holds one Go client per kind and per Expect setting.
type stressClientSet struct {
	byKind  map[string]*http.Client
	expects map[string]*http.Client
	h3tr    *http3.Transport
}

func stressClients() *stressClientSet {
	s := &stressClientSet{byKind: map[string]*http.Client{}, expects: map[string]*http.Client{}}
	mk := func(set func(*http.Protocols), tlsOn, expect bool) *http.Client {
		tr := &http.Transport{MaxConnsPerHost: 16, MaxIdleConnsPerHost: 16}
		if tlsOn {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		if expect {
			tr.ExpectContinueTimeout = 30 * time.Second
		}
		tr.Protocols = new(http.Protocols)
		set(tr.Protocols)
		return &http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	for _, expect := range []bool{false, true} {
		m := s.byKind
		if expect {
			m = s.expects
		}
		m["h1"] = mk(func(p *http.Protocols) { p.SetHTTP1(true) }, false, expect)
		m["h1-tls"] = mk(func(p *http.Protocols) { p.SetHTTP1(true) }, true, expect)
		m["h2c"] = mk(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, false, expect)
		m["h2"] = mk(func(p *http.Protocols) { p.SetHTTP2(true) }, true, expect)
	}
	s.h3tr = &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}}
	s.byKind["h3"] = &http.Client{Transport: s.h3tr, Timeout: 60 * time.Second}
	return s
}

func (s *stressClientSet) pick(c stressCase) *http.Client {
	if c.expect {
		return s.expects[c.client]
	}
	return s.byKind[c.client]
}

func (s *stressClientSet) close() {
	for _, m := range []map[string]*http.Client{s.byKind, s.expects} {
		for k, c := range m {
			if k != "h3" {
				c.Transport.(*http.Transport).CloseIdleConnections()
			}
		}
	}
	s.h3tr.Close()
}

// ---- small helpers ---------------------------------------------------------

// mustJSON marshals v or fails the test.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually polls cond until it holds or the generous deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// envCount is the count an environment variable sets for a long test
// (FLOOD_REQUESTS, STRESS_REQUESTS), or def when it is unset or empty. Any
// other value than a positive whole number fails the test: a typo must not
// run zero cases and pass.
func envCount(t testing.TB, name string, def int) int {
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

// withTimeout is a context for one client request.
func withTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fatalRecorder is a testing.TB whose Fatalf records the message instead
// of ending the test, for checking a helper's refusals.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
}

func TestEnvCountRefusesWhatIsNotACount(t *testing.T) {
	const name = "PROCESSING_TEST_COUNT"
	for _, tc := range []struct {
		value string
		want  int
		fatal string
	}{
		{"", 7, ""},
		{"12", 12, ""},
		{"1O0", 0, `PROCESSING_TEST_COUNT="1O0": want a positive whole number`},
		{"0", 0, `PROCESSING_TEST_COUNT="0": want a positive whole number`},
		{"-3", 0, `PROCESSING_TEST_COUNT="-3": want a positive whole number`},
		{" 5", 0, `PROCESSING_TEST_COUNT=" 5": want a positive whole number`},
	} {
		t.Setenv(name, tc.value)
		rec := &fatalRecorder{TB: t}
		got := envCount(rec, name, 7)
		if rec.fatal != tc.fatal || (tc.fatal == "" && got != tc.want) {
			t.Errorf("%s=%q: got %d and failure %q, want %d and %q", name, tc.value, got, rec.fatal, tc.want, tc.fatal)
		}
	}
}

// leakedReader and leakedWriter stand for a goroutine that outlived its
// request: one waits for bytes that never come, one writes to a peer that
// does not read.
func leakedReader(c net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	_, _ = c.Read(make([]byte, 1))
}

func leakedWriter(c net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	// More than loopback's socket buffers on both sides hold.
	_, _ = c.Write(make([]byte, 64<<20))
}

// TestLeakCheckCatchesGoroutinesBlockedOnConnections runs the leak check
// of every test against goroutines parked in the network poller, which it
// must report, and again once they are gone, when it must pass.
func TestLeakCheckCatchesGoroutinesBlockedOnConnections(t *testing.T) {
	opts := append(leakOptions(), goleak.IgnoreCurrent())
	pair := func() (net.Conn, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	readSide, idle := pair()
	writeSide, deaf := pair()
	done := make(chan struct{}, 2)
	go leakedReader(readSide, done)
	go leakedWriter(writeSide, done)

	err := goleak.Find(opts...)
	if err == nil {
		t.Error("the leak check passed with two goroutines blocked on connections")
	} else {
		for _, want := range []string{"processing.leakedReader", "processing.leakedWriter", "internal/poll.runtime_pollWait"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the leak report does not name %s:\n%v", want, err)
			}
		}
	}

	for _, c := range []net.Conn{readSide, idle, writeSide, deaf} {
		c.Close()
	}
	<-done
	<-done
	if err := goleak.Find(opts...); err != nil {
		t.Errorf("the leak check fails once the goroutines are gone: %v", err)
	}
}
