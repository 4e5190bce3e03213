package interop

// The client compatibility suite: real client programs against a Caddy
// with processing in front of a slow upstream, recording for each whether
// it saw the 102s, whether it got the right final response and body, and
// whether a 102 restarted its own timeout; then the proxies in front of
// that Caddy (proxies_test.go) and the browsers (browsers_test.go). The
// table it prints is the one in docs/clients.md; set CLIENTS_TABLE_FILE to
// a Markdown file holding the clients-table markers to rewrite it there.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// The slow upstream answers after clUpstreamDelay; processing sends 102s
// every clClientInterval, 19 of them: more than the 5 quic-go's client and
// the 8 Java's allow, with a margin for late ticks (a loaded machine gave
// 10 of 13 at 150 ms). A client whose own
// timeout is clClientTimeout completes only if the 102s restart that timeout.
const (
	clUpstreamDelay  = 2 * time.Second
	clClientInterval = 100 * time.Millisecond
	clClientTimeout  = 1 * time.Second
	clUpstreamBody   = "slow upstream done\n"
	clMultistatus    = `<?xml version="1.0" encoding="UTF-8"?>
<D:multistatus xmlns:D="DAV:"><D:response><D:href>/plain/slow</D:href><D:propstat><D:prop><D:displayname>slow</D:displayname></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>
`
)

// clientsSite puts processing, with and without each protection the README
// recommends, in front of the slow upstream, and in front of a WebDAV tree
// for the WebDAV clients.
const clientsSite = `
http://127.0.0.1:{PORT}, https://127.0.0.1:{TLSPORT} {
	root * {ROOT}
	# Caddy's own count of the 102s each request got, for peers whose
	# connection to Caddy the relay cannot read (proxies over HTTP/2,
	# browsers over TLS).
	log {
		output file {ACCESSLOG}
		format json
	}
	log_append interim_count {http.vars.processing.interim_count}
	handle /fast {
		respond "ok"
	}
	handle /none/* {
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /tick/* {
		processing {
			delay 500ms
			interval 500ms
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /async/* {
		# Async mode: a request with Prefer: respond-async gets 202 after
		# 500ms and its result from the monitor, which this route serves.
		processing {
			delay 500ms
			interval 500ms
			async {
				wait 500ms
				monitor /async/jobs
			}
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /viamatch/* {
		# Varnish adds X-Varnish to every request it forwards.
		@direct not header X-Varnish *
		processing @direct {
			delay 100ms
			interval 100ms
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /max9/* {
		processing {
			delay 100ms
			interval 100ms
			max 9
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /plain/* {
		processing {
			delay 100ms
			interval 100ms
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /max/* {
		processing {
			delay 100ms
			interval 100ms
			max 4
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /optin/* {
		processing {
			delay 100ms
			interval 100ms
			opt_in
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /max7/* {
		processing {
			delay 100ms
			interval 100ms
			max 7
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /uamatch/* {
		# The README's example matcher.
		@wants_progress {
			not header_regexp User-Agent ^(python-requests|Python-urllib)/
			not header X-Via-Nginx 1
		}
		processing @wants_progress {
			delay 100ms
			interval 100ms
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
	handle /matcher/* {
		@long method COPY MOVE DELETE PROPFIND PUT
		processing @long {
			delay 100ms
			interval 100ms
		}
		reverse_proxy 127.0.0.1:{UPSTREAM}
	}
{DAVROUTES}}
`

// clDavRoutes are the WebDAV routes of clientsSite, each serving the site's
// root under its own prefix with its own processing options.
var clDavRoutes = []struct{ prefix, options string }{
	{"/dav/", "delay 20ms\n\t\t\tinterval 20ms"},                    // rclone
	{"/davmax/", "delay 20ms\n\t\t\tinterval 20ms\n\t\t\tmax 4"},    // rclone, protected
	{"/davoptin/", "delay 20ms\n\t\t\tinterval 20ms\n\t\t\topt_in"}, // rclone, protected
	{"/dav100/", "delay 100ms\n\t\t\tinterval 100ms"},               // cadaver
	// A 0.5 ms interval reaches neon's limit of 127 interim responses
	// within a COPY of a fraction of a second.
	{"/davflood/", "delay 500us\n\t\t\tinterval 500us"},
	{"/davfloodmax/", "delay 500us\n\t\t\tinterval 500us\n\t\t\tmax 100"},
}

// clSite is clientsSite with its WebDAV routes.
func clSite() string {
	var b strings.Builder
	for _, r := range clDavRoutes {
		fmt.Fprintf(&b, "\thandle %s* {\n\t\tprocessing {\n\t\t\t%s\n\t\t}\n\t\twebdav {\n\t\t\tprefix %s\n\t\t}\n\t}\n",
			r.prefix, r.options, strings.TrimSuffix(r.prefix, "/"))
	}
	// rclone, protected by a matcher on its User-Agent.
	b.WriteString(`	handle /davua/* {
		@handles_102 not header User-Agent rclone/*
		processing @handles_102 {
			delay 20ms
			interval 20ms
		}
		webdav {
			prefix /davua
		}
	}
`)
	return strings.Replace(clientsSite, "{DAVROUTES}", b.String(), 1)
}

// ---- the slow upstream -----------------------------------------------------

// clStartSlowUpstream serves clUpstreamBody after clUpstreamDelay (or the
// duration in the query's delay) on every path; a PROPFIND gets
// clMultistatus, a POST its body echoed.
func clStartSlowUpstream(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posted, _ := io.ReadAll(r.Body)
		delay := clUpstreamDelay
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil {
			delay = d
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		switch r.Method {
		case "PROPFIND":
			w.Header().Set("Content-Type", "application/xml; charset=utf-8")
			w.WriteHeader(http.StatusMultiStatus)
			_, _ = io.WriteString(w, clMultistatus)
		case http.MethodPost:
			// The browsers' form: the body shows it arrived whole.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = fmt.Fprintf(w, "%sposted %s\n", clUpstreamBody, posted)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, clUpstreamBody)
		}
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// ---- a relay that counts what a client was sent ----------------------------

// clRelay forwards loopback TCP connections to Caddy and keeps every byte
// each way, so that the 102s a client was sent can be counted for clients
// that do not report them.
type clRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	open     map[net.Conn]struct{}
	toClient []*bytes.Buffer // one per connection
	toServer bytes.Buffer
}

func clStartRelay(t testing.TB, target string) *clRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &clRelay{ln: ln, target: target, open: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.open {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *clRelay) addr() string { return r.ln.Addr().String() }

func (r *clRelay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", r.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		down := new(bytes.Buffer)
		r.mu.Lock()
		r.open[c], r.open[s] = struct{}{}, struct{}{}
		r.toClient = append(r.toClient, down)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c, s, down)
	}
}

// serve relays one connection both ways until both ends are done.
func (r *clRelay) serve(c, s net.Conn, down *bytes.Buffer) {
	defer r.wg.Done()
	up := make(chan struct{})
	go func() {
		defer close(up)
		r.pipe(s, c, &r.toServer)
	}()
	r.pipe(c, s, down)
	<-up
	r.mu.Lock()
	delete(r.open, c)
	delete(r.open, s)
	r.mu.Unlock()
	c.Close()
	s.Close()
}

// pipe copies src to dst, recording the bytes in rec, and passes on EOF.
func (r *clRelay) pipe(dst, src net.Conn, rec *bytes.Buffer) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			rec.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.(*net.TCPConn).CloseWrite()
}

// take returns and forgets what went each way since the last call: what
// the server sent, one entry per connection, and all the clients sent.
func (r *clRelay) take() (toClient [][]byte, toServer []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A browser keeps its connections open across requests: the buffers
	// of open connections stay, emptied.
	for _, b := range r.toClient {
		toClient = append(toClient, bytes.Clone(b.Bytes()))
		b.Reset()
	}
	toServer = bytes.Clone(r.toServer.Bytes())
	r.toServer.Reset()
	return toClient, toServer
}

// clCount102 counts the 102s sent on all the connections.
func clCount102(conns [][]byte) int {
	n := 0
	for _, wire := range conns {
		n += bytes.Count(wire, []byte("HTTP/1.1 102 Processing\r\n"))
	}
	return n
}

// clStatusLine finds HTTP/1.1 status lines. One may follow a body without
// a line break between them; the status inside a multistatus body is
// followed by "</D:status>", never by a line break.
var clStatusLine = regexp.MustCompile(`HTTP/1\.1 ([0-9]{3}) [^\r\n<]*\r\n`)

// clMost102 is the largest number of 102s before one final response on
// any of the connections.
func clMost102(conns [][]byte) int {
	most := 0
	for _, wire := range conns {
		run := 0
		for _, m := range clStatusLine.FindAllSubmatch(wire, -1) {
			if string(m[1]) == "102" {
				run++
				most = max(most, run)
			} else if m[1][0] != '1' {
				run = 0
			}
		}
	}
	return most
}

// clNeedPrograms skips the test when a program is missing, unless CI is set:
// CI installs them (.ci/install-clients.sh), so there a missing program is
// a failure.
func clNeedPrograms(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (CI runs .ci/install-*.sh): %v", name, err)
			}
			t.Skipf("%s is not installed; see docs/clients.md (running the suite)", name)
		}
	}
}

// clRun runs a program to its end (at most a minute) and returns its output.
func clRun(t *testing.T, dir, stdin string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// version returns the first line a program prints about its version.
func clVersion(name string, args ...string) string {
	// cadaver --version exits 255.
	out, _ := exec.Command(name, args...).CombinedOutput()
	if len(bytes.TrimSpace(out)) == 0 {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// ---- outcomes --------------------------------------------------------------

// clOutcome is what one request from one client came to.
type clOutcome struct {
	Reported int // 1xx the client reported itself; -1 when it has no way to
	Wire     int // 102s on its connection (relay); -1 when not visible
	Status   int
	Body     string
	Err      string
	Elapsed  time.Duration
}

func (o clOutcome) ok() bool { return o.Err == "" && o.Status == 200 && o.Body == clUpstreamBody }

func (o clOutcome) String() string {
	var s string
	switch {
	case o.ok():
		s = "200 + body"
	case o.Err != "":
		s = "error: " + o.Err
	default:
		s = fmt.Sprintf("%d, body %q", o.Status, o.Body)
	}
	return fmt.Sprintf("%s (%v; 102s on the wire %s, reported %s)", s, o.Elapsed.Round(time.Millisecond), countStr(o.Wire), countStr(o.Reported))
}

func countStr(n int) string {
	if n < 0 {
		return "n/a"
	}
	return strconv.Itoa(n)
}

// ---- the clients -----------------------------------------------------------

// clEnv is what a client case gets: where the Caddy is, and the relay in
// front of its plain HTTP port.
type clEnv struct {
	t       *testing.T
	relay   *clRelay
	tlsBase string // https://127.0.0.1:port
	root    string
	dir     string // testdata/clients, absolute
	work    string // lives as long as the suite

	javaOnce    sync.Once
	javaClasses string // JavaClient compiled once, or "" to run the source

	accessLog string // Caddy's access log, JSON lines with interim_count
}

// interimsSent is how many 102s Caddy's access log says the request for
// uri got, or -1 when no entry for it appeared (harness.LoggedInterims).
func (e *clEnv) interimsSent(uri string) int {
	return harness.LoggedInterims(e.t, e.accessLog, uri)
}

func (e *clEnv) plainURL(path string) string { return "http://" + e.relay.addr() + path }

// clGetter makes one GET of path with the client's own timeout (0: its
// default) and reports what came of it.
type clGetter func(e *clEnv, path string, timeout time.Duration) clOutcome

// clientCase is one client and what it is expected to do. Each expectation
// is asserted, so a change of behaviour (a new version, a module change)
// fails the suite rather than quietly changing the table.
type clientCase struct {
	name, proto string
	programs    []string
	version     func() string
	get         clGetter

	worksPlain bool // the plain route ends in 200 + body
	// sees is how the client takes the 102s, the kind that seesKind
	// gives: "reports" each, "sent" with no way to report them, or takes
	// the first as its "final" response.
	sees string
	// breaks matches how it breaks on the plain route (shortOutcome),
	// when it does.
	breaks *regexp.Regexp
	// timeout: "reset" (completes within its own timeout thanks to the
	// 102s), "not reset" (times out) or "" (no such setting, not asked).
	timeout string
	// ownTimeout is the client's timeout for that run; 0 means
	// clClientTimeout.
	ownTimeout time.Duration
	// protected: routes that must give 200 + body when the plain one does not.
	protected []string
	// unprotected: routes with a protection that must not help this client.
	unprotected []string
}

func clientCases() []clientCase {
	return []clientCase{
		{
			name: "curl", proto: "HTTP/1.1", programs: []string{"curl"},
			version: curlVersion,
			get:     curlGet(false), worksPlain: true, sees: "reports", timeout: "not reset",
		},
		{
			name: "curl", proto: "HTTP/2", programs: []string{"curl"},
			version: curlVersion,
			get:     curlGet(true), worksPlain: true, sees: "reports", timeout: "not reset",
		},
		{
			name: "Go net/http", proto: "HTTP/1.1", version: func() string { return runtime.Version() },
			get: goGet("h1"), worksPlain: true, sees: "reports", timeout: "not reset",
		},
		{
			name: "Go net/http", proto: "HTTP/2", version: func() string { return runtime.Version() },
			get: goGet("h2"), worksPlain: true, sees: "reports", timeout: "not reset",
		},
		{
			name: "Go quic-go http3", proto: "HTTP/3", version: func() string { return "quic-go " + moduleVersion("github.com/quic-go/quic-go") },
			get: goGet("h3"), worksPlain: false, sees: "reports", protected: []string{"/max/", "/optin/", "/matcher/"},
			breaks: regexp.MustCompile("^error `http3: too many 1xx informational responses`$"),
		},
		{
			name: "Node http", proto: "HTTP/1.1", programs: []string{"node"},
			version: func() string { return "node " + clVersion("node", "--version") },
			get:     nodeGet("http"), worksPlain: true, sees: "reports", timeout: "reset",
		},
		{
			name: "Node fetch (undici)", proto: "HTTP/1.1", programs: []string{"node"},
			version: func() string { return "node " + clVersion("node", "--version") },
			get:     nodeGet("fetch"), worksPlain: true, sees: "sent", timeout: "reset",
		},
		{
			name: "Python http.client", proto: "HTTP/1.1", programs: []string{"python3"},
			version: func() string { return clVersion("python3", "--version") },
			get:     pythonGet("http.client"), worksPlain: false, sees: "final", protected: []string{"/optin/", "/matcher/"},
			breaks:      regexp.MustCompile(`^102 with body ""$`),
			unprotected: []string{"/uamatch/"},
		},
		{
			name: "Python urllib", proto: "HTTP/1.1", programs: []string{"python3"},
			version: func() string { return clVersion("python3", "--version") },
			get:     pythonGet("urllib"), worksPlain: false, sees: "final", protected: []string{"/optin/", "/uamatch/"},
			breaks: regexp.MustCompile("^error `HTTPError 102"),
		},
		{
			name: "Java HttpClient", proto: "HTTP/1.1", programs: []string{"java", "javac"},
			version: javaVersion,
			get:     javaGet, worksPlain: false, sees: "sent", timeout: "not reset",
			breaks: regexp.MustCompile("^error `java.net.ProtocolException: Too many interim responses received: 9 > 8`$"),
			// Before the 9th 102 (at 900 ms) breaks it: a client whose
			// timeout the 102s restart gets that far, one whose timeout
			// they do not times out first.
			ownTimeout: 700 * time.Millisecond,
			protected:  []string{"/max7/", "/optin/", "/matcher/"},
		},
	}
}

func curlGet(h2 bool) clGetter {
	return func(e *clEnv, path string, timeout time.Duration) clOutcome {
		body := filepath.Join(e.t.TempDir(), "body")
		url := e.plainURL(path)
		args := []string{"-sS", "-v", "--max-time", "30", "-o", body, "-w", "%{http_code}"}
		if h2 {
			url = e.tlsBase + path
			args = append(args, "-k", "--http2")
		}
		if timeout > 0 {
			// curl has no response timeout but the low-speed one: give up
			// when fewer than 1 byte a second arrived for that long.
			args = append(args, "--speed-limit", "1", "--speed-time", strconv.Itoa(int(timeout/time.Second)))
		}
		start := time.Now()
		stdout, stderr, err := clRun(e.t, "", "", nil, "curl", append(args, url)...)
		o := clOutcome{Elapsed: time.Since(start), Wire: -1}
		o.Reported = len(regexp.MustCompile(`(?m)^< HTTP/[0-9.]+ 102`).FindAllString(stderr, -1))
		if err != nil {
			o.Err = clLastLine(stderr)
			return o
		}
		o.Status, _ = strconv.Atoi(strings.TrimSpace(stdout))
		b, _ := os.ReadFile(body)
		o.Body = string(b)
		return o
	}
}

func goGet(proto string) clGetter {
	return func(e *clEnv, path string, timeout time.Duration) clOutcome {
		var client *http.Client
		url := e.tlsBase + path
		switch proto {
		case "h1":
			client = harness.H1Client()
			url = e.plainURL(path)
		case "h2":
			client = harness.H2Client()
			defer client.CloseIdleConnections()
		case "h3":
			var closeH3 func()
			client, closeH3 = harness.H3Client()
			defer closeH3()
		}
		if tr, ok := client.Transport.(*http.Transport); ok && timeout > 0 {
			tr.ResponseHeaderTimeout = timeout
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			e.t.Fatal(err)
		}
		start := time.Now()
		s, err := harness.TracedDo(e.t, client, req)
		o := clOutcome{Elapsed: time.Since(start), Wire: -1, Reported: s.Count(102)}
		if err != nil {
			// Without `Get "https://127.0.0.1:port/...": `, which differs
			// from run to run.
			o.Err = goErrPrefix.ReplaceAllString(err.Error(), "")
			return o
		}
		o.Status, o.Body = s.Status, string(s.Body)
		return o
	}
}

var goErrPrefix = regexp.MustCompile(`^[A-Za-z]+ "[^"]*": `)

func nodeGet(mode string) clGetter {
	return func(e *clEnv, path string, timeout time.Duration) clOutcome {
		start := time.Now()
		stdout, stderr, err := clRun(e.t, e.dir, "", nil, "node", "node_client.js", mode, e.plainURL(path), strconv.Itoa(int(timeout/time.Millisecond)))
		o := clOutcome{Elapsed: time.Since(start), Wire: -1}
		var res struct {
			Interims []int `json:"interims"`
			Status   int   `json:"status"`
			Body     string
			Error    string
		}
		if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil || err != nil {
			o.Err = fmt.Sprintf("node: %v %v: %s%s", err, jerr, stdout, stderr)
			return o
		}
		o.Reported = -1
		if res.Interims != nil {
			o.Reported = 0
			for _, c := range res.Interims {
				if c == 102 {
					o.Reported++
				}
			}
		}
		o.Status, o.Body, o.Err = res.Status, res.Body, res.Error
		return o
	}
}

func pythonGet(mode string) clGetter {
	return func(e *clEnv, path string, timeout time.Duration) clOutcome {
		return scriptGet(e, "python3", []string{"py_client.py", mode, e.plainURL(path), strconv.FormatFloat(timeout.Seconds(), 'f', 3, 64)})
	}
}

func javaGet(e *clEnv, path string, timeout time.Duration) clOutcome {
	// Compiled once: the source launcher would compile on every run, about
	// two seconds each on a 2-core machine.
	e.javaOnce.Do(func() {
		classes := filepath.Join(e.work, "java")
		if _, stderr, err := clRun(e.t, e.dir, "", nil, "javac", "-d", classes, "JavaClient.java"); err != nil {
			e.t.Logf("javac: %v %s; running the source file instead", err, stderr)
			return
		}
		e.javaClasses = classes
	})
	args := []string{"JavaClient.java"}
	if e.javaClasses != "" {
		args = []string{"-cp", e.javaClasses, "JavaClient"}
	}
	return scriptGet(e, "java", append(args, e.plainURL(path), strconv.Itoa(int(timeout/time.Millisecond))))
}

// scriptGet runs a client script that prints {status, body, error}; such a
// client has no way to report a 1xx.
func scriptGet(e *clEnv, name string, args []string) clOutcome {
	start := time.Now()
	stdout, stderr, err := clRun(e.t, e.dir, "", nil, name, args...)
	o := clOutcome{Elapsed: time.Since(start), Wire: -1, Reported: -1}
	var res struct {
		Status int
		Body   string
		Error  string
		Ms     *float64 // the request's own time, without the program's start
	}
	if jerr := json.Unmarshal([]byte(stdout), &res); jerr != nil || err != nil {
		o.Err = fmt.Sprintf("%s: %v %v: %s%s", name, err, jerr, stdout, stderr)
		return o
	}
	o.Status, o.Body, o.Err = res.Status, res.Body, res.Error
	if res.Ms != nil {
		o.Elapsed = time.Duration(*res.Ms * float64(time.Millisecond))
	}
	return o
}

func javaVersion() string {
	out, err := exec.Command("java", "-version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	// `openjdk version "17.0.15" 2025-04-15`
	if m := regexp.MustCompile(`version "([^"]+)"`).FindStringSubmatch(string(out)); m != nil {
		return "OpenJDK " + m[1]
	}
	return "unknown"
}

func curlVersion() string {
	// "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 ..."
	f := strings.Fields(clVersion("curl", "--version"))
	if len(f) < 2 {
		return "unknown"
	}
	return f[0] + " " + f[1]
}

// moduleVersion reads a dependency's version from go.mod: a test binary
// carries no module information.
func moduleVersion(path string) string {
	b, err := os.ReadFile("go.mod")
	if err != nil {
		return "unknown"
	}
	if m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(path) + ` (v\S+)`).FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return "unknown"
}

func clLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// clTimedOut matches the clients' own timeout errors.
var clTimedOut = regexp.MustCompile(`(?i)timed? ?out|too slow|idle`)

// ---- the suite -------------------------------------------------------------

// clRow is one line of the compatibility table.
type clRow struct {
	Client, Version, Proto string
	Sees102, Final         string
	TimeoutReset, Notes    string
}

func TestClientCompatibility(t *testing.T) {
	suiteStart := time.Now()
	upstream := clStartSlowUpstream(t)
	root := t.TempDir()
	accessLog := filepath.Join(t.TempDir(), "access.log")
	sites := strings.NewReplacer("{UPSTREAM}", strconv.Itoa(upstream), "{ACCESSLOG}", accessLog).Replace(clSite())
	port, tlsPort := harness.StartWebDAVCaddy(t, root, sites)
	dir, err := filepath.Abs("testdata/clients")
	if err != nil {
		t.Fatal(err)
	}
	e := &clEnv{
		relay:     clStartRelay(t, fmt.Sprintf("127.0.0.1:%d", port)),
		tlsBase:   fmt.Sprintf("https://127.0.0.1:%d", tlsPort),
		root:      root,
		dir:       dir,
		work:      t.TempDir(),
		accessLog: accessLog,
	}
	var rows []clRow

	for _, c := range clientCases() {
		t.Run(c.name+" "+c.proto, func(t *testing.T) {
			clNeedPrograms(t, c.programs...)
			e.t = t
			e.relay.take()
			r := clRow{Client: c.name, Version: c.version(), Proto: c.proto}
			defer func() { rows = append(rows, r) }()

			plain := c.get(e, "/plain/slow", 0)
			toClient, _ := e.relay.take()
			if c.proto == "HTTP/1.1" {
				plain.Wire = clCount102(toClient)
			}
			t.Logf("plain: %v", plain)
			r.Sees102 = sees102(plain)
			r.Final = finalCell(plain)
			if plain.ok() != c.worksPlain {
				t.Errorf("plain route: want works=%v, got %v", c.worksPlain, plain)
			}
			if c.worksPlain && c.proto == "HTTP/1.1" && plain.Wire < 3 {
				t.Errorf("%d 102s sent on the client's connection during a %v request", plain.Wire, clUpstreamDelay)
			}
			if plain.Reported > 0 && plain.Wire > 0 && plain.Reported != plain.Wire {
				t.Errorf("client reported %d 102s, %d were sent", plain.Reported, plain.Wire)
			}
			if got := seesKind(plain); got != c.sees {
				t.Errorf("the 102s: want %q, got %q: %v", c.sees, got, plain)
			}
			if !c.worksPlain && (c.breaks == nil || !c.breaks.MatchString(shortOutcome(plain))) {
				t.Errorf("plain route: want it to break with %v, got %s", c.breaks, shortOutcome(plain))
			}

			switch c.timeout {
			case "":
				r.TimeoutReset = "n/a"
			default:
				own := cmp.Or(c.ownTimeout, clClientTimeout)
				timed := c.get(e, "/plain/slow", own)
				e.relay.take()
				t.Logf("own timeout %v: %v", own, timed)
				// Timed out: the 102s did not restart the timeout. Done, or
				// broken later for another reason (Java's interim limit):
				// they did.
				got := "reset"
				if !timed.ok() && clTimedOut.MatchString(timed.Err) {
					got = "not reset"
				}
				r.TimeoutReset = fmt.Sprintf("%s (%v timeout: %s)", clYesNo(got == "reset"), own, shortOutcome(timed))
				if got != c.timeout {
					t.Errorf("own timeout of %v on a %v request with 102s every %v: want %s, got %s: %v",
						own, clUpstreamDelay, clClientInterval, c.timeout, got, timed)
				}
			}

			var notes []string
			for _, p := range c.protected {
				o := c.get(e, p+"slow", 0)
				toClient, _ := e.relay.take()
				if c.proto == "HTTP/1.1" {
					o.Wire = clCount102(toClient)
				}
				t.Logf("%s: %v", protectionName(p), o)
				notes = append(notes, fmt.Sprintf("with %s: %s", protectionName(p), shortOutcome(o)))
				if !o.ok() {
					t.Errorf("protected by %s: want 200 + body, got %v", protectionName(p), o)
				}
				// The protection held the 102s to its bound: a route's
				// max, none for opt_in and the matchers.
				if n := max(o.Wire, o.Reported); n > routeMax(p) {
					t.Errorf("protected by %s: %d 102s reached the client, want at most %d", protectionName(p), n, routeMax(p))
				}
			}
			for _, p := range c.unprotected {
				o := c.get(e, p+"slow", 0)
				toClient, _ := e.relay.take()
				if c.proto == "HTTP/1.1" {
					o.Wire = clCount102(toClient)
				}
				t.Logf("%s: %v", protectionName(p), o)
				notes = append(notes, fmt.Sprintf("%s does not help: %s", protectionName(p), shortOutcome(o)))
				// It breaks as on the plain route, the 102s still sent.
				if o.ok() || shortOutcome(o) != shortOutcome(plain) || o.Wire < 1 {
					t.Errorf("%s: want it not to help (%s), got %v", protectionName(p), shortOutcome(plain), o)
				}
			}
			r.Notes = strings.Join(notes, "; ")
		})
	}

	t.Run("cadaver COPY", func(t *testing.T) {
		clNeedPrograms(t, "cadaver")
		e.t = t
		rows = append(rows, cadaverCopy(e))
	})
	t.Run("rclone copyto", func(t *testing.T) {
		clNeedPrograms(t, "rclone")
		e.t = t
		rows = append(rows, rcloneCopy(e))
	})

	for _, c := range proxyCases() {
		t.Run("proxy "+c.server.program+" "+c.proto(), func(t *testing.T) {
			e.t = t
			rows = append(rows, runProxyCase(t, e, e.relay.target, c))
		})
	}

	for _, b := range browserKinds() {
		for _, h2 := range []bool{false, true} {
			name := "browser " + b.driver + " HTTP/1.1"
			if h2 {
				name = "browser " + b.driver + " HTTP/2"
			}
			t.Run(name, func(t *testing.T) {
				e.t = t
				rows = append(rows, runBrowserCase(t, e, b, h2))
			})
		}
	}

	table := renderTable(rows, time.Now())
	path := os.Getenv("CLIENTS_TABLE_FILE")
	t.Logf("suite took %v\n%s", time.Since(suiteStart).Round(time.Millisecond), table)
	// A client that was skipped leaves no row; such a table is not written.
	if want := len(clientCases()) + 2 + len(proxyCases()) + 2*len(browserKinds()); path != "" && len(rows) != want {
		t.Errorf("CLIENTS_TABLE_FILE: only %d of %d clients ran; %s left as it was", len(rows), want, path)
	}
	if path != "" && !t.Failed() {
		if err := replaceTable(path, table); err != nil {
			t.Fatal(err)
		}
	}
}

// seesKind is the kind of sees102's verdict, which a client case names:
// "final", "reports", "hides" (reports none of those sent), "sent" (no
// way to report), or "none" when nothing shows that a 102 was sent.
func seesKind(o clOutcome) string {
	switch {
	case o.Status >= 100 && o.Status < 200 && o.Wire != 0:
		return "final"
	case o.Reported >= 3:
		return "reports"
	case o.Reported == 0 && o.Wire > 0:
		return "hides"
	case o.Reported < 0 && o.Wire >= 3:
		return "sent"
	}
	return "none"
}

func sees102(o clOutcome) string {
	switch {
	case o.Status >= 100 && o.Status < 200:
		return fmt.Sprintf("takes the first as final (%d sent)", o.Wire)
	case o.Reported > 0:
		return fmt.Sprintf("yes, reports each (%d)", o.Reported)
	case o.Reported == 0 && o.Wire > 0:
		return fmt.Sprintf("no: reported 0 of %d", o.Wire)
	case o.Wire > 0:
		return fmt.Sprintf("sent %d; no way to report", o.Wire)
	default:
		return "no way to report"
	}
}

func finalCell(o clOutcome) string {
	if o.ok() {
		return "200 + body"
	}
	return "**breaks**: " + shortOutcome(o)
}

func shortOutcome(o clOutcome) string {
	switch {
	case o.ok():
		return fmt.Sprintf("200 + body in %v", o.Elapsed.Round(100*time.Millisecond))
	case o.Err != "":
		return "error `" + clTruncate(o.Err, 90) + "`"
	default:
		return fmt.Sprintf("%d with body %q", o.Status, clTruncate(o.Body, 40))
	}
}

func clTruncate(s string, n int) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func clYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func protectionName(p string) string {
	switch p {
	case "/max/":
		return "`max 4`"
	case "/max7/":
		return "`max 7`"
	case "/uamatch/":
		return "the README's matcher (User-Agent, `X-Via-Nginx`)"
	case "/optin/":
		return "`opt_in`"
	case "/matcher/":
		return "a method matcher"
	case "/max9/":
		return "`max 9`"
	case "/viamatch/":
		return "a matcher on the `X-Varnish` field it adds"
	}
	return p
}

// ---- WebDAV clients --------------------------------------------------------

// davWebInterval is the interval on the WebDAV routes: short, so that even
// a quick COPY outlasts the five 1xx older Go clients (rclone) accept.
const davWebInterval = 20 * time.Millisecond

// copyTreeFiles is the size of the tree cadaver copies: 0.3 to 2.7 s of
// COPY work on the project's machine (the WebDAV tests log the measured
// rates): 3 to 27 intervals of 100 ms, well under neon's limit of 127, and
// far more than 128 of 0.5 ms.
const copyTreeFiles = 4000

func cadaverCopy(e *clEnv) clRow {
	t := e.t
	// "cadaver 0.24\nneon 0.32.5: Library build, ..."
	out, _ := exec.Command("cadaver", "--version").CombinedOutput()
	v := strings.Join(regexp.MustCompile(`(?m)^(cadaver|neon) [0-9.]+`).FindAllString(string(out), -1), ", ")
	r := clRow{Client: "cadaver (neon)", Version: v, Proto: "HTTP/1.1"}
	src := filepath.Join(e.root, "tree")
	harness.MakeTree(t, src, copyTreeFiles, 4096)
	want := harness.TreeDigest(t, src)
	home := t.TempDir()
	type result struct {
		ok         bool
		out        string
		sent, most int
		elapsed    time.Duration
	}
	// Each run copies to a destination of its own: after a client gives
	// up, x/net/webdav still finishes the COPY it started.
	copyOnce := func(route, name string) result {
		dst := filepath.Join(e.root, name)
		start := time.Now()
		stdout, stderr, err := clRun(t, home, "copy tree "+name+"\nquit\n", []string{"HOME=" + home},
			"cadaver", "http://"+e.relay.addr()+route)
		res := result{elapsed: time.Since(start), out: stdout + stderr}
		toClient, toServer := e.relay.take()
		res.sent, res.most = clCount102(toClient), clMost102(toClient)
		t.Logf("cadaver copy via %s: %v, %d 102s sent, at most %d to one request, exit %v\n%s",
			route, res.elapsed.Round(time.Millisecond), res.sent, res.most, err, res.out)
		if !bytes.Contains(toServer, []byte("COPY "+route+"tree")) {
			t.Errorf("cadaver sent no COPY:\n%.1000s", toServer)
		}
		res.ok = err == nil && strings.Contains(stdout, "succeeded")
		if res.ok {
			harness.SameTree(t, want, harness.TreeDigest(t, dst))
		}
		return res
	}
	describe := func(res result) string {
		if res.ok {
			return fmt.Sprintf("COPY 201, tree of %d files complete, in %v", copyTreeFiles, res.elapsed.Round(100*time.Millisecond))
		}
		if m := regexp.MustCompile(`failed:\s*\n(.*)`).FindStringSubmatch(res.out); m != nil {
			return "error `" + clTruncate(m[1], 60) + "`"
		}
		return "error `" + clTruncate(res.out, 60) + "`"
	}

	plain := copyOnce("/dav100/", "copy-plain")
	r.Sees102 = fmt.Sprintf("sent %d; no way to report", plain.sent)
	r.TimeoutReset = "n/a (no setting)"
	r.Final = describe(plain)
	if !plain.ok || plain.most < 1 || plain.most >= 128 {
		t.Errorf("at 100ms: want a complete COPY after some 102s (fewer than 128), got %d 102s: %s", plain.most, describe(plain))
	}

	// neon counts interim responses and gives up at the 128th.
	flood := copyOnce("/davflood/", "copy-flood")
	if !flood.ok {
		// The server carries on: the tree is complete once it is done.
		davWaitForTree(t, want, filepath.Join(e.root, "copy-flood"))
	}
	protected := copyOnce("/davfloodmax/", "copy-flood-max")
	r.Notes = fmt.Sprintf("at a 0.5 ms interval (%d 102s): %s; with `max 100`: %s", flood.most, describe(flood), describe(protected))
	if flood.most >= 128 && (flood.ok || !strings.Contains(flood.out, "Too many interim responses")) {
		t.Errorf("%d 102s: want neon's \"Too many interim responses\", got %s", flood.most, describe(flood))
	}
	if flood.most < 128 {
		t.Errorf("the COPY got only %d 102s at a 0.5 ms interval: raise copyTreeFiles to show neon's limit", flood.most)
	}
	if !protected.ok || protected.most > 100 {
		t.Errorf("max 100: want a complete COPY after at most 100 102s, got %d: %s", protected.most, describe(protected))
	}
	return r
}

// davWaitForTree waits until dir holds what want describes, which a COPY
// that lost its client still completes.
func davWaitForTree(t testing.TB, want map[string]string, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := harness.TreeDigest(t, dir)
		if len(got) == len(want) {
			harness.SameTree(t, want, got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d entries of %d after 30s", dir, len(got), len(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// copyFileSize is the size of the file rclone copies server-side. The
// plugin's file wrappers make COPY go through a user-space buffer: 512 MiB
// took 1.2 to 6.3 s on the project's machine, so 256 MiB outlasts the six
// 20 ms intervals that show rclone's limit many times over.
const copyFileSize = 256 << 20

func rcloneCopy(e *clEnv) clRow {
	t := e.t
	r := clRow{Client: "rclone", Version: clVersion("rclone", "version"), Proto: "HTTP/1.1"}
	// rclone's HTTP client is Go's: before Go 1.24 it gives up after five
	// 1xx responses ("too many 1xx informational responses").
	goVersion := "unknown"
	if m := regexp.MustCompile(`go/version: (go\S+)`).FindStringSubmatch(func() string {
		out, _ := exec.Command("rclone", "version").CombinedOutput()
		return string(out)
	}()); m != nil {
		goVersion = m[1]
		r.Version += " (" + goVersion + ")"
	}
	limited := goOlderThan(goVersion, 1, 24)

	src := filepath.Join(e.root, "big.bin")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// Every MiB differs from the others in its first eight bytes, so a
	// block copied to the wrong place shows.
	block := make([]byte, 1<<20)
	for j := range block {
		block[j] = byte(j * 13)
	}
	for i := range copyFileSize / len(block) {
		binary.BigEndian.PutUint64(block, uint64(i))
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Each route serves the same folder under its own prefix.
	conf := filepath.Join(t.TempDir(), "rclone.conf")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		elapsed time.Duration
		sent    int
		most    int // 102s before one final response
		out     string
		err     error
	}
	copyOnce := func(route string, timeout time.Duration) result {
		dst := filepath.Join(e.root, "big-copy.bin")
		os.Remove(dst)
		args := []string{"copyto", ":webdav:big.bin", ":webdav:big-copy.bin",
			"--webdav-url", "http://" + e.relay.addr() + route,
			"--retries", "1", "--low-level-retries", "1", "-v"}
		if timeout > 0 {
			args = append(args, "--timeout", timeout.String())
		}
		start := time.Now()
		stdout, stderr, err := clRun(t, "", "", []string{"RCLONE_CONFIG=" + conf}, "rclone", args...)
		res := result{elapsed: time.Since(start), out: stdout + stderr, err: err}
		toClient, toServer := e.relay.take()
		res.sent, res.most = clCount102(toClient), clMost102(toClient)
		t.Logf("rclone copyto via %s (timeout %v): %v, %d 102s sent, at most %d to one request, exit %v\n%s",
			route, timeout, res.elapsed.Round(time.Millisecond), res.sent, res.most, err, res.out)
		if !bytes.Contains(toServer, []byte("COPY "+route+"big.bin")) {
			t.Errorf("rclone did not copy server-side with COPY:\n%.1000s", toServer)
		}
		if err == nil && !clSameFile(t, src, dst) {
			t.Errorf("via %s: the copy differs from the source", route)
		}
		return res
	}
	outcomeOf := func(res result) string {
		if res.err == nil {
			return fmt.Sprintf("COPY done, %d MiB identical, in %v", copyFileSize>>20, res.elapsed.Round(100*time.Millisecond))
		}
		return "error `" + clTruncate(rcloneError(res.out), 90) + "`"
	}

	plain := copyOnce("/dav/", 0)
	r.Sees102 = fmt.Sprintf("sent %d; no way to report", plain.sent)
	if plain.err == nil {
		r.Final = outcomeOf(plain)
	} else {
		r.Final = "**breaks**: " + outcomeOf(plain)
	}
	switch {
	case plain.most <= 5 && plain.err == nil:
		t.Errorf("COPY too quick to show rclone's limit (%d 102s): raise copyFileSize", plain.sent)
	case limited && (plain.err == nil || !strings.Contains(plain.out, "too many 1xx")):
		t.Errorf("rclone built with %s: want it to give up after five 102s, got %s", goVersion, outcomeOf(plain))
	case !limited && plain.err != nil:
		t.Errorf("rclone built with %s: %s", goVersion, outcomeOf(plain))
	}

	if limited {
		var notes []string
		for _, p := range []struct{ route, name string }{
			{"/davmax/", "`max 4`"}, {"/davoptin/", "`opt_in`"}, {"/davua/", "a User-Agent matcher"},
		} {
			res := copyOnce(p.route, 0)
			notes = append(notes, "with "+p.name+": "+outcomeOf(res))
			if res.err != nil {
				t.Errorf("protected by %s: %s", p.name, outcomeOf(res))
			}
			if p.route == "/davmax/" && res.most > 4 {
				t.Errorf("max 4: a request got %d 102s", res.most)
			}
		}
		r.Notes = strings.Join(notes, "; ")
	}

	// rclone's --timeout is its Go client's ResponseHeaderTimeout too: at
	// three intervals, a client whose timeout a 102 restarts runs into
	// the five-1xx limit (limited) or completes; one whose timeout it
	// does not restart stops at "timeout awaiting response headers". The
	// COPY must take twice that for the answer to mean anything.
	timeout := 3 * davWebInterval
	if plain.most < 10 && plain.err == nil {
		r.TimeoutReset = fmt.Sprintf("not measured: the COPY got only %d 102s", plain.most)
		t.Errorf("COPY too quick to measure rclone's --timeout (%d 102s): raise copyFileSize", plain.most)
		return r
	}
	res := copyOnce("/dav/", timeout)
	switch {
	case res.err != nil && strings.Contains(res.out, "timeout awaiting response headers"):
		r.TimeoutReset = fmt.Sprintf("no (%v `--timeout`: `timeout awaiting response headers`)", timeout)
	case res.err == nil || strings.Contains(res.out, "too many 1xx"):
		// Its --timeout is Go's ResponseHeaderTimeout, which no 1xx
		// restarts (the Go net/http rows): this would be news.
		r.TimeoutReset = fmt.Sprintf("yes (%v `--timeout`: %s)", timeout, outcomeOf(res))
		t.Errorf("rclone's --timeout %v restarted by 102s: %s", timeout, outcomeOf(res))
	default:
		r.TimeoutReset = "unclear: " + outcomeOf(res)
		t.Errorf("rclone with --timeout %v: %s", timeout, outcomeOf(res))
	}
	os.Remove(filepath.Join(e.root, "big-copy.bin"))
	return r
}

// rcloneError is the reason in rclone's last error line.
func rcloneError(out string) string {
	line := clLastLine(out)
	if i := strings.LastIndex(line, ": net/http: "); i >= 0 {
		return line[i+2:]
	}
	return line
}

// goOlderThan reports whether a "go1.19.8" version is older than
// major.minor; an unknown version is not.
func goOlderThan(v string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(v, "go%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma < major || ma == major && mi < minor
}

func clSameFile(t testing.TB, a, b string) bool {
	t.Helper()
	sum := func(p string) [32]byte {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		return [32]byte(h.Sum(nil))
	}
	return sum(a) == sum(b)
}

// ---- the table -------------------------------------------------------------

func renderTable(rows []clRow, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Generated %s by `TestClientCompatibility` on %s/%s: upstream answers after %v, "+
		"processing `delay`/`interval` %v (WebDAV routes: 100ms for cadaver, 20ms for rclone), client timeouts %v; "+
		"proxies' timeout runs: %v of work, a 102 every %v, proxy timeout %v.\n\n",
		now.UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, clUpstreamDelay, clClientInterval, clClientTimeout,
		prTimeoutWork, prTickInterval, prShortTimeout)
	b.WriteString("| Client | Version | Protocol | Sees the 102s | Final response | A 102 resets its timeout | Protection |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Client, clTruncate(r.Version, 60), r.Proto,
			r.Sees102, r.Final, r.TimeoutReset, orDash(r.Notes))
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "not needed"
	}
	return s
}

const (
	tableStart = "<!-- clients-table -->"
	tableEnd   = "<!-- /clients-table -->"
)

// replaceTable rewrites the text between the clients-table markers.
func replaceTable(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, tableStart), strings.Index(s, tableEnd)
	if i < 0 || j < i {
		return errors.New(path + " has no " + tableStart + " … " + tableEnd + " block")
	}
	s = s[:i+len(tableStart)] + "\n" + table + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
