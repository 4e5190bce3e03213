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

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// observeConfig is the sites of TestLogsVariableAndMetrics: each request
// gets exactly max 102s, interval apart, since its handler answers once
// they went out (observeBehaviours).
func observeConfig(logFile, accessLog, interval string, max int) string {
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
		processing %[3]s {
			max %[4]d
		}
		test_work slowwrite
	}
	handle /nothing {
		processing %[3]s {
			max %[4]d
		}
		test_work slownothing
	}
}
http://127.0.0.1:{TLSPORT} {
	processing %[3]s {
		max %[4]d
	}
	test_work slowwrite
}
`, logFile, accessLog, interval, max)
}

// observeBehaviours sets the handlers of observeConfig: they answer once
// max 102s went out, one with a body and an implicit 200, one with nothing
// at all.
func observeBehaviours(t *testing.T, max int) {
	harness.SetBehaviour(t, "slowwrite", harness.AfterInterims(max, "written"))
	harness.SetBehaviour(t, "slownothing", func(w http.ResponseWriter, r *http.Request) error {
		return harness.AwaitInterims(r, max)
	})
}

func TestLogsVariableAndMetrics(t *testing.T) {
	observeBehaviours(t, 3)
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
	// A 400 ms interval: a 102 sent a whole interval late stands well
	// apart from a scheduler's noise (lateness below).
	sites := observeConfig(logFile, accessLog, "400ms", 3)
	port, port2 := harness.StartCaddyGlobal(t, global, sites)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	const requests, lateness = "caddy_http_processing_requests_total", "caddy_http_processing_interim_lateness_seconds"
	sentBefore := harness.InterimsSent(t, "server", "first")
	reqsBefore := harness.CounterValue(t, requests, "server", "first")
	lateBefore := harness.Histogram(t, lateness, "server", "first")

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

	// Caddy's metrics handler serves the module's metrics.
	if !strings.Contains(string(body), harness.InterimsSentMetric+`{server="first"}`) {
		t.Errorf("Caddy's metrics lack the module's counter:\n%s", grepLines(string(body), "processing"))
	}

	// The module's counters, shared by both servers' handlers.
	if got := harness.InterimsSent(t, "server", "first") - sentBefore; got != 6 {
		t.Errorf("first server interim counter rose by %v, want 6", got)
	}
	if got := harness.CounterValue(t, requests, "server", "first") - reqsBefore; got != 2 {
		t.Errorf("first server request counter rose by %v, want 2", got)
	}
	if got := harness.InterimsSent(t, "server", "second"); got < 3 {
		t.Errorf("second server interim counter %v, want at least 3", got)
	}
	// Each of the six 102s was scheduled (no Prefer: processing), and went
	// out neither before its time nor long after it. A 102 sent a whole
	// interval (400 ms) late lands above the 250 ms bucket; a loaded
	// machine's scheduling delays stay far below that.
	late := harness.Histogram(t, lateness, "server", "first").Since(lateBefore)
	if late.Count != 6 {
		t.Errorf("lateness histogram of the first server rose by %v observations, want 6", late.Count)
	}
	if late.Buckets[0.25] != late.Count || late.Sum < 0 || late.Sum > 6*0.25 {
		t.Errorf("lateness of the first server's %d 102s: %d within 250 ms, %vs in all (buckets %v)",
			late.Count, late.Buckets[0.25], late.Sum, late.Buckets)
	}
	if got := harness.Histogram(t, lateness, "server", "second").Count; got < 3 {
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
	observeBehaviours(t, 2)
	sentBeforeReload := harness.InterimsSent(t, "server", "first")
	lateBeforeReload := harness.Histogram(t, lateness, "server", "first").Count
	reloaded := strings.ReplaceAll(strings.ReplaceAll(global+observeConfig(logFile, accessLog, "300ms", 2),
		"{PORT}", strconv.Itoa(port)), "{TLSPORT}", strconv.Itoa(port2))
	harness.Reload(t, harness.Adapt(t, reloaded))
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
	if got := harness.InterimsSent(t, "server", "first"); got != sentBeforeReload+2 {
		t.Errorf("after reload the counter is %v, want %v", got, sentBeforeReload+2)
	}
	if got := harness.Histogram(t, lateness, "server", "first").Count; got != lateBeforeReload+2 {
		t.Errorf("after reload the lateness histogram has %v observations, want %v", got, lateBeforeReload+2)
	}
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
