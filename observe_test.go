package processing

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"github.com/caddyserver/caddy/v2"
)

// metricValue reads one sample from Prometheus text exposition.
func metricValue(t *testing.T, url, name, server string) float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{server="` + regexp.QuoteMeta(server) + `"\} (\S+)$`)
	m := re.FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func observeConfig(logFile, accessLog, interval string) string {
	return fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	log {
		output file %[2]s
		format json
	}
	log_append interim_count {http.vars.processing.interim_count}
	handle /metrics {
		metrics
	}
	handle /write {
		processing %[3]s
		test_work slowwrite
	}
	handle /nothing {
		processing %[3]s
		test_work slownothing
	}
}
http://127.0.0.1:{TLSPORT} {
	processing %[3]s
	test_work slowwrite
}
`, logFile, accessLog, interval)
}

func TestLogsVariableAndMetrics(t *testing.T) {
	harness.SetBehaviour(t, "slowwrite", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(700 * time.Millisecond)
		_, err := io.WriteString(w, "written") // implicit 200
		return err
	})
	harness.SetBehaviour(t, "slownothing", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(700 * time.Millisecond)
		return nil // writes nothing at all
	})
	dir := t.TempDir()
	logFile, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	// Server names fixed by listener: the adapter numbers servers in the
	// order of their random ports.
	global := harness.GlobalOptionsWith(t, fmt.Sprintf(`log {
		level DEBUG
		output file %s
		format json
	}
	metrics
	servers :{PORT} {
		name first
	}
	servers :{TLSPORT} {
		name second
	}`, logFile))
	sites := observeConfig(logFile, accessLog, "200ms")
	port, port2 := harness.StartCaddyGlobal(t, global, sites)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	sentBefore := metricValue(t, metricsURL, "caddy_http_processing_interim_responses_total", "first")
	reqsBefore := metricValue(t, metricsURL, "caddy_http_processing_requests_total", "first")
	const lateness = "caddy_http_processing_interim_lateness_seconds"
	lateCountBefore := metricValue(t, metricsURL, lateness+"_count", "first")
	lateSumBefore := metricValue(t, metricsURL, lateness+"_sum", "first")

	for _, path := range []string{"/write", "/nothing"} {
		res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet(path))
		if res.Status != 200 || len(res.Interims) != 3 {
			t.Fatalf("%s: %d with %d interims:\n%s", path, res.Status, len(res.Interims), res.Wire)
		}
	}
	// A second server, and a fast request, for the counters.
	if res := harness.RawRequest(t, harness.Loopback(port2), harness.RawGet("/")); len(res.Interims) != 3 {
		t.Fatalf("second server: %d interims", len(res.Interims))
	}
	if res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/metrics")); res.Status != 200 {
		t.Fatalf("metrics: %d", res.Status)
	}

	// The access log records the real final status, never 102, and the
	// count through log_append.
	harness.Eventually(t, "access log entries", func() bool { return len(harness.ReadJSONLines(t, accessLog)) >= 3 })
	counts := map[string]float64{}
	for _, e := range harness.ReadJSONLines(t, accessLog) {
		req, _ := e["request"].(map[string]any)
		uri, _ := req["uri"].(string)
		if status, _ := e["status"].(float64); status != 200 {
			t.Errorf("access log for %s has status %v, want 200", uri, e["status"])
		}
		if n, ok := e["interim_count"].(float64); ok {
			counts[uri] = n
		} else if uri != "/metrics" {
			t.Errorf("access log for %s lacks interim_count: %v", uri, e)
		}
	}
	if counts["/write"] != 3 || counts["/nothing"] != 3 {
		t.Errorf("interim counts in access log %v", counts)
	}

	// Caddy's own metrics record 200 too.
	res, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.Contains(string(body), `code="102"`) {
		t.Errorf("Caddy's metrics recorded a 102 as a final status")
	}
	// The first server's two requests (and its /metrics scrapes) and the
	// second server's one are counted as 200s.
	count200 := func(server string) float64 {
		m := regexp.MustCompile(`(?m)^caddy_http_response_duration_seconds_count\{code="200",handler="subroute",method="GET",server="` + server + `"\} (\S+)$`).FindSubmatch(body)
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseFloat(string(m[1]), 64)
		return n
	}
	if first, second := count200("first"), count200("second"); first < 2 || second != 1 {
		t.Errorf("Caddy's metrics count %v 200s for the first server (want 2 or more) and %v for the second (want 1):\n%s",
			first, second, grepLines(string(body), "duration_seconds_count"))
	}

	// The module's counters, shared by both servers' handlers.
	if got := metricValue(t, metricsURL, "caddy_http_processing_interim_responses_total", "first") - sentBefore; got != 6 {
		t.Errorf("first server interim counter rose by %v, want 6", got)
	}
	if got := metricValue(t, metricsURL, "caddy_http_processing_requests_total", "first") - reqsBefore; got != 2 {
		t.Errorf("first server request counter rose by %v, want 2", got)
	}
	if got := metricValue(t, metricsURL, "caddy_http_processing_interim_responses_total", "second"); got < 3 {
		t.Errorf("second server interim counter %v, want at least 3", got)
	}
	// Each of the six 102s was scheduled (no Prefer: processing), and went
	// out neither before its time nor seconds after it.
	if got := metricValue(t, metricsURL, lateness+"_count", "first") - lateCountBefore; got != 6 {
		t.Errorf("lateness histogram of the first server rose by %v observations, want 6", got)
	}
	if got := metricValue(t, metricsURL, lateness+"_sum", "first") - lateSumBefore; got < 0 || got > 6*2.5 {
		t.Errorf("lateness of the first server's six 102s sums to %vs", got)
	}
	if got := metricValue(t, metricsURL, lateness+"_count", "second"); got < 3 {
		t.Errorf("lateness histogram of the second server has %v observations, want at least 3", got)
	}

	// Debug log: one line per 102 with its count and elapsed time, and one
	// at the end with the total.
	var sent []map[string]any
	var done []float64
	for _, e := range harness.ReadJSONLines(t, logFile) {
		if e["logger"] != "http.handlers.processing" {
			continue
		}
		switch e["msg"] {
		case "sent 102 Processing":
			sent = append(sent, e)
		case "request done":
			done = append(done, e["interim_count"].(float64))
		}
	}
	if len(sent) < 9 {
		t.Fatalf("%d debug lines for 102s, want 9", len(sent))
	}
	for _, e := range sent[:3] {
		if _, ok := e["elapsed"].(float64); !ok || e["count"] == nil || e["uri"] == nil {
			t.Errorf("debug line lacks count, elapsed or uri: %v", e)
		}
	}
	if sent[0]["count"].(float64) != 1 || sent[2]["count"].(float64) != 3 {
		t.Errorf("counts in debug lines: %v, %v", sent[0]["count"], sent[2]["count"])
	}
	if len(done) < 3 || done[0] != 3 {
		t.Errorf("end-of-request debug lines %v", done)
	}

	// A reload with a changed config neither fails on registering the
	// metrics again nor loses their count.
	sentBeforeReload := metricValue(t, metricsURL, "caddy_http_processing_interim_responses_total", "first")
	lateBeforeReload := metricValue(t, metricsURL, lateness+"_count", "first")
	reloaded := strings.ReplaceAll(strings.ReplaceAll(global+observeConfig(logFile, accessLog, "300ms"),
		"{PORT}", strconv.Itoa(port)), "{TLSPORT}", strconv.Itoa(port2))
	if err := loadAgain(harness.Adapt(t, reloaded)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The new server takes over the listener; wait until it answers.
	harness.Eventually(t, "the reloaded server", func() bool {
		c, err := http.Get(metricsURL)
		if err == nil {
			c.Body.Close()
		}
		return err == nil
	})
	if res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/write")); len(res.Interims) != 2 {
		t.Fatalf("after reload: %d interims, want 2 at 300ms", len(res.Interims))
	}
	if got := metricValue(t, metricsURL, "caddy_http_processing_interim_responses_total", "first"); got != sentBeforeReload+2 {
		t.Errorf("after reload the counter is %v, want %v", got, sentBeforeReload+2)
	}
	if got := metricValue(t, metricsURL, lateness+"_count", "first"); got != lateBeforeReload+2 {
		t.Errorf("after reload the lateness histogram has %v observations, want %v", got, lateBeforeReload+2)
	}
}

// loadAgain replaces the running config, as `caddy reload` does.
func loadAgain(cfg []byte) error {
	return caddyLoad(cfg)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var caddyLoad = func(cfg []byte) error { return caddy.Load(cfg, true) }
