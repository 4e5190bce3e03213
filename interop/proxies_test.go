package interop

// The proxy part of the compatibility suite: nginx, Apache httpd, HAProxy,
// Varnish and Squid from Debian's packages, each started by the test in
// the foreground on a loopback port, in front of the suite's Caddy with
// processing before the slow upstream. For each, over HTTP/1.1 and, where
// the proxy can, HTTP/2 to Caddy, it records what reaches a client behind
// the proxy, whether the 102s keep the proxy's own read timeout from
// firing, and which protection keeps the proxy working.

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// The timeout runs: a proxy whose read timeout is prShortTimeout forwards
// requests whose upstream takes prTimeoutWork, with a 102 every
// prTickInterval (the /tick/ route) or none (/none/). The interval is a
// quarter of the timeout, and gives 7 102s in all: under every proxy's
// limit of interim responses, so that a failure there is the timer's.
// Squid's timers tick in whole seconds, so the timeout is 2 s rather
// than 1. prLongTimeout is the proxies' timeout otherwise.
const (
	prShortTimeout = 2 * time.Second
	prTimeoutWork  = 4 * time.Second
	prTickInterval = 500 * time.Millisecond
	prLongTimeout  = 30 * time.Second
)

// proxyServer is one reverse proxy and how to run it.
type proxyServer struct {
	name    string // as in the table: the proxy and its forwarding module
	program string
	version func() string
	// h2 says whether the proxy can speak HTTP/2 to Caddy (h2c, the
	// prior-knowledge form, to Caddy's plain port).
	h2 bool
	// clientH2: the suite also asks it over HTTP/2 (h2c), where a 102
	// that it takes as its final response cannot pass as bytes.
	clientH2 bool
	// timeoutSetting names the setting that prShortTimeout sets.
	timeoutSetting string
	// config writes the proxy's configuration into dir for a proxy
	// listening on listen and forwarding to upstream (host:port), and
	// returns the program's arguments. A proxy with clientH2 also serves
	// HTTP/2 with prior knowledge (h2c) on h2Listen.
	config func(dir string, listen, h2Listen int, upstream string, h2 bool, timeout time.Duration) []string
}

func proxyServers() []proxyServer {
	return []proxyServer{
		{
			name: "nginx `proxy_pass`", program: "nginx", timeoutSetting: "proxy_read_timeout",
			version: func() string { return prVersion("nginx", `nginx/(\S+)`, "-v") },
			config:  nginxConfig, clientH2: true,
		},
		{
			name: "Apache `mod_proxy_http`", program: "apache2", timeoutSetting: "ProxyTimeout",
			version: func() string { return prVersion("apache2", `Apache/(\S+)`, "-v") },
			h2:      true, config: apacheConfig,
		},
		{
			name: "HAProxy", program: "haproxy", timeoutSetting: "timeout server",
			version: func() string { return prVersion("haproxy", `version (\S+)`, "-v") },
			h2:      true, config: haproxyConfig,
		},
		{
			name: "Varnish", program: "varnishd", timeoutSetting: "first_byte_timeout",
			version: func() string { return prVersion("varnishd", `varnish-(\S+)`, "-V") },
			config:  varnishConfig,
		},
		{
			name: "Squid (reverse proxy)", program: "squid", timeoutSetting: "read_timeout",
			version: func() string { return prVersion("squid", `Version (\S+)`, "-v") },
			config:  squidConfig,
		},
	}
}

// prVersion runs a program and picks its version out of what it prints.
func prVersion(program, pattern string, args ...string) string {
	path, err := prLookPath(program)
	if err != nil {
		return "unknown"
	}
	out, _ := exec.Command(path, args...).CombinedOutput()
	if m := regexp.MustCompile(pattern).FindSubmatch(out); m != nil {
		return program + " " + string(m[1])
	}
	return "unknown"
}

// prLookPath finds a program on PATH or in the sbin folders, where Debian
// puts the daemons and which a non-root PATH lacks.
func prLookPath(program string) (string, error) {
	if p, err := exec.LookPath(program); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, program)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not on PATH nor in /usr/sbin", program)
}

// prNeedProxy is clNeedPrograms for the proxies, which
// .ci/install-proxies.sh installs.
func prNeedProxy(t *testing.T, program string) string {
	t.Helper()
	path, err := prLookPath(program)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI runs .ci/install-proxies.sh): %v", program, err)
		}
		t.Skipf("%s is not installed; see docs/clients.md (running the suite)", program)
	}
	return path
}

// ---- the proxies' configurations -------------------------------------------
// Each is what a user of the proxy would write for a plain reverse proxy,
// with its files in dir and its read timeout set.

func nginxConfig(dir string, listen, h2Listen int, upstream string, _ bool, timeout time.Duration) []string {
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
events {
	worker_connections 64;
}
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen 127.0.0.1:%[2]d;
		listen 127.0.0.1:%[5]d http2;
		location / {
			proxy_pass http://%[3]s;
			proxy_http_version 1.1;
			# The header the README's matcher looks for.
			proxy_set_header X-Via-Nginx 1;
			add_header X-Proxy nginx always;
			proxy_read_timeout %[4]dms;
		}
	}
}
`, dir, listen, upstream, timeout.Milliseconds(), h2Listen)
	prWrite(dir, "nginx.conf", conf)
	// The master stays in the foreground (daemon off) and is the process
	// the test stops; -e keeps the error log out of /var/log.
	return []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}
}

func apacheConfig(dir string, listen, h2Listen int, upstream string, h2 bool, timeout time.Duration) []string {
	const mods = "/usr/lib/apache2/modules/"
	scheme, h2mod := "http", ""
	if h2 {
		scheme, h2mod = "h2c", "LoadModule proxy_http2_module "+mods+"mod_proxy_http2.so"
	}
	conf := fmt.Sprintf(`ServerRoot %[1]s
ServerName 127.0.0.1
Listen 127.0.0.1:%[2]d
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
ErrorLog %[1]s/error.log
LogLevel warn
User www-data
Group www-data
LoadModule mpm_event_module %[5]smod_mpm_event.so
LoadModule authz_core_module %[5]smod_authz_core.so
LoadModule proxy_module %[5]smod_proxy.so
LoadModule proxy_http_module %[5]smod_proxy_http.so
LoadModule headers_module %[5]smod_headers.so
%[6]s
Header always set X-Proxy apache
ProxyTimeout %[4]d
ProxyPass "/" "%[7]s://%[3]s/"
ProxyPassReverse "/" "%[7]s://%[3]s/"
`, dir, listen, upstream, int(timeout/time.Second), mods, h2mod, scheme)
	prWrite(dir, "httpd.conf", conf)
	return []string{"-f", filepath.Join(dir, "httpd.conf"), "-DFOREGROUND"}
}

func haproxyConfig(dir string, listen, h2Listen int, upstream string, h2 bool, timeout time.Duration) []string {
	proto := ""
	if h2 {
		proto = " proto h2"
	}
	conf := fmt.Sprintf(`global
	log stderr format raw local0 info
defaults
	mode http
	log global
	option httplog
	timeout connect 5s
	timeout client 60s
	timeout server %[3]dms
frontend web
	bind 127.0.0.1:%[1]d
	default_backend caddy
	http-response set-header X-Proxy haproxy
backend caddy
	server caddy %[2]s%[4]s
`, listen, upstream, timeout.Milliseconds(), proto)
	prWrite(dir, "haproxy.cfg", conf)
	// -db: stay in the foreground.
	return []string{"-db", "-f", filepath.Join(dir, "haproxy.cfg")}
}

func varnishConfig(dir string, listen, h2Listen int, upstream string, _ bool, timeout time.Duration) []string {
	host, port, _ := net.SplitHostPort(upstream)
	vcl := fmt.Sprintf(`vcl 4.1;
backend caddy {
	.host = "%s";
	.port = "%s";
	.first_byte_timeout = %dms;
	.between_bytes_timeout = %dms;
}
sub vcl_deliver {
	set resp.http.X-Proxy = "varnish";
}
`, host, port, timeout.Milliseconds(), timeout.Milliseconds())
	prWrite(dir, "default.vcl", vcl)
	// -F: foreground; -n: its working folder here, not /var/lib/varnish;
	// -T none: no management port.
	return []string{"-F", "-a", fmt.Sprintf("127.0.0.1:%d", listen), "-f", filepath.Join(dir, "default.vcl"),
		"-n", filepath.Join(dir, "varnish"), "-s", "malloc,32m", "-T", "none"}
}

func squidConfig(dir string, listen, h2Listen int, upstream string, _ bool, timeout time.Duration) []string {
	host, port, _ := net.SplitHostPort(upstream)
	conf := fmt.Sprintf(`http_port 127.0.0.1:%[2]d accel defaultsite=127.0.0.1 no-vhost
cache_peer %[3]s parent %[4]s 0 no-query originserver name=caddy
cache_peer_access caddy allow all
http_access allow all
read_timeout %[5]d seconds
pid_filename %[1]s/squid.pid
cache_log %[1]s/cache.log
access_log stdio:%[1]s/access.log
cache_store_log none
reply_header_add X-Proxy squid
coredump_dir %[1]s
pinger_enable off
netdb_filename none
shutdown_lifetime 0 seconds
`, dir, listen, host, port, int(timeout/time.Second))
	prWrite(dir, "squid.conf", conf)
	// -N: no daemon, no worker processes.
	return []string{"-N", "-f", filepath.Join(dir, "squid.conf")}
}

func prWrite(dir, name, text string) {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		panic(err)
	}
}

// ---- running a proxy -------------------------------------------------------

// prWorkDir is a folder for one proxy's config, logs and state that the
// proxy's own unprivileged user can write too: Apache's children, Squid
// and Varnish's worker drop root, and t.TempDir's parent is closed to
// them.
func prWorkDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "caddy-processing-proxy-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// prStart runs a proxy in the foreground (startGroup) and waits until it
// answers on listen. Its output goes to dir/output.log.
func prStart(t *testing.T, path, dir string, listen int, args []string) {
	t.Helper()
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	t.Cleanup(func() { out.Close() })
	exited := startGroup(t, cmd, nil)
	// Ready when a fast request goes through to Caddy.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("%s exited at start:\n%s", filepath.Base(path), prLogs(dir))
		default:
		}
		if o := prGet(fmt.Sprintf("127.0.0.1:%d", listen), "/fast"); o.Status == 200 && o.Body == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer /fast on port %d after 30s:\n%s", filepath.Base(path), listen, prLogs(dir))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// prLogs is every log a proxy wrote in dir, for a failure message.
func prLogs(dir string) string {
	var b strings.Builder
	for _, name := range []string{"output.log", "error.log", "cache.log", "access.log"} {
		if data, err := os.ReadFile(filepath.Join(dir, name)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "--- %s\n%s\n", name, prTail(string(data), 3000))
		}
	}
	return b.String()
}

// prTail is the last n bytes of s.
func prTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// ---- a client behind the proxy ---------------------------------------------

// prOutcome is what a raw HTTP/1.1 client behind a proxy read for one
// request: every 1xx the proxy passed on, then its final response or how
// the connection ended.
type prOutcome struct {
	Interims int    // 102s that reached the client
	Status   int    // final status; 0 when none came
	Reason   string // its reason phrase
	Body     string // its body
	Err      string // how reading ended early
	Wire     string // every byte the client read
	// Marked: the final response carries the X-Proxy field that each
	// proxy is configured to add to every response it sends, so the proxy
	// parsed that response itself rather than passing it on as bytes.
	Marked   bool
	Location string // of the final response
	Elapsed  time.Duration
	Sent     int // 102s Caddy sent for the request (its access log)
}

func (o prOutcome) ok() bool {
	return o.Status == 200 && o.Body == clUpstreamBody && o.Err == ""
}

// prRequests makes every request's URI unique, so that no cache answers
// one and the access log tells requests apart.
var prRequests atomic.Int64

// prGet makes one GET through the proxy on addr, with the extra header
// lines ("Name: value\r\n") given.
func prGet(addr, path string, extra ...string) prOutcome {
	start := time.Now()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return prOutcome{Err: err.Error(), Sent: -1}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: caddy-processing-tests\r\nConnection: close\r\n%s\r\n", path, strings.Join(extra, ""))
	res, err := harness.ReadRawResponse(bufio.NewReader(conn), start, false)
	o := prOutcome{Elapsed: time.Since(start), Wire: string(res.Wire), Sent: -1, Location: res.Header.Get("Location")}
	for _, i := range res.Interims {
		if i.Code == 102 {
			o.Interims++
		}
	}
	o.Status, o.Body = res.Status, string(res.Body)
	o.Marked = res.Header.Get("X-Proxy") != ""
	if m := prFinalStatus.FindAllStringSubmatch(o.Wire, -1); m != nil {
		o.Reason = m[len(m)-1][1]
	}
	if err != nil {
		o.Err = err.Error()
	}
	return o
}

// prAsync runs a request of prTimeoutWork through the proxy on addr in
// async mode, as a client of it would: Prefer: respond-async, then the
// monitor polled every 250 ms until it redirects to the result, then the
// result. It returns the final answer, each step's status, and the time
// the whole took.
func prAsync(addr string) (result prOutcome, steps []int, took time.Duration) {
	start := time.Now()
	uri := fmt.Sprintf("/async/slow?n=%d&delay=%v", prRequests.Add(1), prTimeoutWork)
	o := prGet(addr, uri, "Prefer: respond-async\r\n")
	steps = append(steps, o.Status)
	monitor := o.Location
	for time.Since(start) < 30*time.Second {
		switch {
		case o.Status == 202, o.Status == 200 && strings.Contains(o.Body, `"running"`):
			if o.Status == 200 {
				time.Sleep(250 * time.Millisecond)
			}
			o = prGet(addr, monitor)
		case o.Status == 303:
			o = prGet(addr, o.Location)
		default:
			return o, steps, time.Since(start)
		}
		steps = append(steps, o.Status)
	}
	return o, steps, time.Since(start)
}

// prFinalStatus finds final status lines and their reason phrase.
var prFinalStatus = regexp.MustCompile(`HTTP/1\.[01] ([2-5][0-9]{2} [^\r\n]*)\r\n`)

// prGetH2 makes one GET through the proxy on addr over HTTP/2 with prior
// knowledge, with Go's client.
func prGetH2(t testing.TB, addr, path string) prOutcome {
	client := harness.H2CClient()
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return prOutcome{Err: err.Error(), Sent: -1}
	}
	start := time.Now()
	s, err := harness.TracedDo(t, client, req)
	o := prOutcome{Elapsed: time.Since(start), Interims: s.Count(102), Sent: -1}
	if err != nil {
		o.Err = goErrPrefix.ReplaceAllString(err.Error(), "")
		return o
	}
	o.Status, o.Body, o.Marked = s.Status, string(s.Body), s.Header.Get("X-Proxy") != ""
	o.Reason = fmt.Sprintf("%d %s", s.Status, http.StatusText(s.Status))
	return o
}

// reaches says what reached the client, in the table's words; the
// verdicts the suite asserts are the words before the colon.
func (o prOutcome) reaches() string {
	sent := "?"
	if o.Sent >= 0 {
		sent = strconv.Itoa(o.Sent)
	}
	switch {
	case o.ok() && !o.Marked && o.Interims > 0:
		// nginx: it answers with the first 102 as its response, then
		// copies what follows as that response's body.
		return fmt.Sprintf("the 102 as the final response: the first 102 as the proxy's response, then %d more and Caddy's 200 passed through unparsed as its body (%s sent)", o.Interims-1, sent)
	case o.ok() && o.Interims > 0:
		return fmt.Sprintf("the 102s: %d of %s forwarded", o.Interims, sent)
	case o.ok():
		return fmt.Sprintf("only the final response: 0 of %s 102s forwarded", sent)
	case o.Status == 0 && o.Interims > 0 && o.Body == "":
		return fmt.Sprintf("the 102 as the final response: %d 102, then the connection closed without a final response (%s sent)", o.Interims, sent)
	case o.Status >= 500:
		return fmt.Sprintf("an error after %d 102s: `%s`", o.Interims, o.Reason)
	case o.Status == 0:
		return fmt.Sprintf("a cut: %d 102s, then `%s`", o.Interims, clTruncate(o.Err, 40))
	}
	return fmt.Sprintf("%d with body %q after %d 102s", o.Status, clTruncate(o.Body, 40), o.Interims)
}

func (o prOutcome) verdict() string {
	v, _, _ := strings.Cut(o.reaches(), ":")
	return v
}

func (o prOutcome) String() string {
	return fmt.Sprintf("%s (%v)", o.reaches(), o.Elapsed.Round(time.Millisecond))
}

// ---- the cases -------------------------------------------------------------

// proxyCase is one proxy over one protocol to Caddy and what it is
// expected to do; each expectation is asserted.
type proxyCase struct {
	server proxyServer
	h2     bool
	// reaches is the verdict of prOutcome.reaches on the plain route, and
	// status the final status the client reads there.
	reaches string
	status  int
	// keepsAlive: whether a 102 every prTickInterval keeps a request of
	// clUpstreamDelay alive through a proxy timeout of prShortTimeout.
	keepsAlive bool
	// protected: routes that must give 200 + body when the plain one does
	// not, each with no more 102s reaching the proxy than it allows.
	protected []string
}

func (c proxyCase) proto() string {
	if c.h2 {
		return "HTTP/2 (h2c)"
	}
	return "HTTP/1.1"
}

func proxyCases() []proxyCase {
	s := proxyServers()
	return []proxyCase{
		{server: s[0], reaches: "the 102 as the final response", status: 200, keepsAlive: true, protected: []string{"/optin/", "/uamatch/"}},
		{server: s[1], reaches: "an error after 10 102s", status: 502, keepsAlive: true, protected: []string{"/max9/", "/optin/"}},
		{server: s[1], h2: true, reaches: "only the final response", status: 200, keepsAlive: true},
		{server: s[2], reaches: "the 102s", status: 200, keepsAlive: true},
		{server: s[2], h2: true, reaches: "the 102s", status: 200, keepsAlive: true},
		{server: s[3], reaches: "an error after 0 102s", status: 503, protected: []string{"/optin/", "/viamatch/"}},
		{server: s[4], reaches: "the 102s", status: 200},
	}
}

// runProxyCase starts the case's proxy twice, with a long and with a short
// read timeout, measures both and returns the case's row.
func runProxyCase(t *testing.T, e *clEnv, caddyAddr string, c proxyCase) clRow {
	path := prNeedProxy(t, c.server.program)
	r := clRow{Client: c.server.name + " in front", Version: c.server.version(), Proto: c.proto() + " to Caddy"}
	// start returns the proxy's address, and that of its HTTP/2
	// listener prefixed with "h2:" for get.
	dirs := map[string]string{} // a proxy's address -> its folder
	start := func(timeout time.Duration) (addr, h2Addr string) {
		dir := prWorkDir(t)
		defer func() { dirs[addr] = dir }()
		listen, h2Listen := harness.FreePort(t), harness.FreePort(t)
		prStart(t, path, dir, listen, c.server.config(dir, listen, h2Listen, caddyAddr, c.h2, timeout))
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s with a %v timeout:\n%s", c.server.program, timeout, prLogs(dir))
			}
		})
		return fmt.Sprintf("127.0.0.1:%d", listen), fmt.Sprintf("h2:127.0.0.1:%d", h2Listen)
	}
	get := func(addr, route string) prOutcome {
		uri := fmt.Sprintf("%sslow?n=%d", route, prRequests.Add(1))
		if strings.HasPrefix(addr, "h2:") {
			addr = strings.TrimPrefix(addr, "h2:")
			o := prGetH2(t, addr, uri)
			o.Sent = e.interimsSent(uri)
			t.Logf("%s via %s over h2c: %v", uri, addr, o)
			return o
		}
		if route == "/none/" || route == "/tick/" {
			uri += "&delay=" + prTimeoutWork.String()
		}
		o := prGet(addr, uri)
		o.Sent = e.interimsSent(uri)
		t.Logf("%s via %s: %v\n%s", uri, addr, o, clTruncate(o.Wire, 300))
		return o
	}

	long, longH2 := start(prLongTimeout)
	plain := get(long, "/plain/")
	r.Sees102 = plain.reaches()
	r.Final = finalCellOf(plain.ok(), prShort(plain))
	if got := plain.verdict(); got != c.reaches || plain.Status != c.status {
		t.Errorf("plain route: want %q and a %d, got %v", c.reaches, c.status, plain)
	}
	works := plain.ok() && plain.Marked
	if plain.ok() && !plain.Marked {
		// The right bytes, but not as the proxy's response: an HTTP/2
		// client of the proxy shows what that means.
		h2 := get(longH2, "/plain/")
		r.Final = fmt.Sprintf("**breaks**: an HTTP/1.1 client gets the bytes of Caddy's 200 + body, but inside the 102 response: without the proxy's own fields, and the proxy logs 102; a client over HTTP/2 gets %s", prShort(h2))
		if !c.server.clientH2 || h2.Status != 0 || h2.Interims < 1 {
			t.Errorf("over HTTP/2 to the proxy: want a 102 and no final response, got %v", h2)
		}
		// The proxy's access log line for the request ("GET uri
		// HTTP/1.1" status bytes ...) has 102 as the status.
		logged, _ := os.ReadFile(filepath.Join(dirs[long], "access.log"))
		if !regexp.MustCompile(`"GET /plain/slow\?n=[0-9]+ HTTP/1\.1" 102 `).Match(logged) {
			t.Errorf("want the proxy's access log to record 102 for the plain request, got:\n%s", logged)
		}
	}
	if plain.Sent < 1 {
		t.Errorf("Caddy sent %d 102s for a request of %v", plain.Sent, clUpstreamDelay)
	}
	if plain.Interims > plain.Sent || c.reaches == "the 102s" && plain.Interims != plain.Sent {
		t.Errorf("%d 102s reached the client, Caddy sent %d", plain.Interims, plain.Sent)
	}

	// The timeout runs: with no 102s the short timeout must fire (else
	// the run shows nothing), with a 102 every prTickInterval it fires
	// only if the 102s do not restart it.
	short, _ := start(prShortTimeout)
	none := get(short, "/none/")
	if none.ok() {
		t.Errorf("no 102s, %v %s, %v of work: want the timeout to end the request, got %v",
			prShortTimeout, c.server.timeoutSetting, prTimeoutWork, none)
	}
	tick := get(short, "/tick/")
	setting := fmt.Sprintf("`%s` %v", c.server.timeoutSetting, prShortTimeout)
	switch {
	case tick.ok() && !tick.Marked:
		r.TimeoutReset = fmt.Sprintf("yes, but only as bytes of the 102 response's body (%s, %v of work, a 102 every %v: %s; without 102s: %s)",
			setting, prTimeoutWork, prTickInterval, prShort(tick), prShort(none))
	case tick.ok():
		r.TimeoutReset = fmt.Sprintf("yes (%s, %v of work, a 102 every %v: %s; without 102s: %s)",
			setting, prTimeoutWork, prTickInterval, prShort(tick), prShort(none))
	case works:
		r.TimeoutReset = fmt.Sprintf("**no** (%s, %v of work, a 102 every %v: %s; without 102s: %s): raise `%s` above the longest request",
			setting, prTimeoutWork, prTickInterval, prShort(tick), prShort(none), c.server.timeoutSetting)
	default:
		r.TimeoutReset = fmt.Sprintf("n/a: it breaks on a 102 (%s: %s; without 102s: %s): raise `%s` above the longest request",
			setting, prShort(tick), prShort(none), c.server.timeoutSetting)
	}
	if tick.ok() != c.keepsAlive {
		t.Errorf("%s with a 102 every %v on a %v request: want survived=%v, got %v",
			setting, prTickInterval, prTimeoutWork, c.keepsAlive, tick)
	}
	// Where 102s are not the answer, async mode is: every request through
	// the proxy is short (the 202, each poll of the monitor, the result).
	if !(tick.ok() && tick.Marked && works) {
		res, steps, took := prAsync(short)
		t.Logf("async mode via %s: %v, steps %v", short, res, steps)
		final := "200 + body"
		if !res.ok() {
			final = prShort(res)
		}
		r.TimeoutReset += fmt.Sprintf("; or async mode (`Prefer: respond-async`, `wait 500ms`): 202, the monitor polled, 303, then %s, %v in all",
			final, took.Round(100*time.Millisecond))
		if !res.ok() || len(steps) < 3 || steps[0] != 202 || !slices.Contains(steps, 303) {
			t.Errorf("async mode through %s: want 202, polls, 303 and 200 + body, got %v after %v", setting, steps, res)
		}
	}

	var notes []string
	for _, p := range c.protected {
		o := get(long, p)
		notes = append(notes, fmt.Sprintf("with %s: %s", protectionName(p), prShort(o)))
		if !o.ok() {
			t.Errorf("protected by %s: want 200 + body, got %v", protectionName(p), o)
		}
		if limit := routeMax(p); o.Sent > limit {
			t.Errorf("protected by %s: Caddy sent %d 102s, more than %d", protectionName(p), o.Sent, limit)
		}
	}
	if len(c.protected) > 0 == works {
		t.Errorf("protections listed for a proxy that works=%v", works)
	}
	r.Notes = strings.Join(notes, "; ")
	return r
}

// routeMax is the most 102s a protected route may send: its max, and none
// for routes that leave the suite's requests out.
func routeMax(route string) int {
	switch route {
	case "/max/":
		return 4
	case "/max7/":
		return 7
	case "/max9/":
		return 9
	}
	return 0
}

func prShort(o prOutcome) string {
	switch {
	case o.ok():
		return fmt.Sprintf("200 + body in %v", o.Elapsed.Round(100*time.Millisecond))
	case o.Status >= 200:
		return fmt.Sprintf("`%s` after %v", o.Reason, o.Elapsed.Round(100*time.Millisecond))
	case o.Status == 0 && o.Interims > 0:
		return fmt.Sprintf("%d 102, then the connection closed, after %v", o.Interims, o.Elapsed.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("`%s` after %v", clTruncate(o.Err, 40), o.Elapsed.Round(100*time.Millisecond))
}

func finalCellOf(ok bool, s string) string {
	if ok {
		return "200 + body"
	}
	return "**breaks**: " + s
}
