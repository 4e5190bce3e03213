package processing

// Claims of the README that no behaviour test covered: the defaults and
// the elapsed placeholder of its options table, and Caddyfile.example
// doing what its "Trying it" section shows.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
)

// TestDefaultIntervalAndDelay: interval defaults to 20s (RFC 2518 §10.1's
// guidance) and delay to the interval. Twenty seconds are too long to wait
// for on the wire, so this reads what Provision settled on.
func TestDefaultIntervalAndDelay(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		name            string
		h               Handler
		interval, delay time.Duration
	}{
		{"nothing set", Handler{}, 20 * time.Second, 20 * time.Second},
		{"interval only", Handler{Interval: caddy.Duration(5 * time.Second)}, 5 * time.Second, 5 * time.Second},
		{"delay only", Handler{Delay: caddy.Duration(time.Second)}, 20 * time.Second, time.Second},
	} {
		h := tc.h
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// Provision takes the process's timer wheel; give it back.
		if err := h.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if h.interval != tc.interval || h.delay != tc.delay {
			t.Errorf("%s: interval %v, delay %v; want %v, %v", tc.name, h.interval, h.delay, tc.interval, tc.delay)
		}
	}
}

// TestElapsedPlaceholderIsTimeSinceStart: {http.processing.elapsed} is the
// time since Caddy received the request, in milliseconds, written as
// Go writes a duration ("200ms", "20.001s").
func TestElapsedPlaceholderIsTimeSinceStart(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.AfterInterims(2, "done"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 200ms
		interval 200ms
		max 2
		header X-Progress "{http.processing.count} after {http.processing.elapsed}"
	}
	test_work slow
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/"))
	if len(res.Interims) != 2 || res.Status != 200 {
		t.Fatalf("got %d interims and %d:\n%s", len(res.Interims), res.Status, res.Wire)
	}
	field := regexp.MustCompile(`^(\d) after (\S+)$`)
	for i, in := range res.Interims {
		m := field.FindStringSubmatch(in.Header.Get("X-Progress"))
		if m == nil || m[1] != string(rune('1'+i)) {
			t.Fatalf("102 number %d has X-Progress %q", i+1, in.Header.Get("X-Progress"))
		}
		elapsed, err := time.ParseDuration(m[2])
		if err != nil {
			t.Fatalf("102 number %d: elapsed %q: %v", i+1, m[2], err)
		}
		// Due at 200ms and 400ms: late on a busy machine, never early.
		due := time.Duration(i+1) * 200 * time.Millisecond
		if elapsed < due || elapsed >= time.Second || elapsed%time.Millisecond != 0 {
			t.Errorf("102 number %d: elapsed %v, want %v or a little more, in whole milliseconds", i+1, elapsed, due)
		}
	}
}

// TestCaddyfileExampleAsTheREADMEShowsIt runs Caddyfile.example, with only
// its addresses changed, in front of a slow upstream: a client gets a 102
// every 2 seconds with the count and the elapsed time in X-Progress, and
// then the upstream's answer; Python's requests, which the example's
// matcher leaves out, gets none.
func TestCaddyfileExampleAsTheREADMEShowsIt(t *testing.T) {
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	upstream := harness.Upstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seconds, _ := strconv.ParseFloat(r.URL.Query().Get("seconds"), 64)
		select {
		case <-time.After(time.Duration(seconds * float64(time.Second))):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "done after %v seconds\n", seconds)
	}))
	port := harness.FreePort(t)
	text := string(example)
	for _, r := range []struct{ old, new string }{
		{"http://localhost:8080 {", fmt.Sprintf("http://127.0.0.1:%d {", port)},
		{"reverse_proxy 127.0.0.1:9080", "reverse_proxy " + upstream},
		// Keep the example's log lines out of the test's output, and its
		// config out of Caddy's autosave.
		{"\tlog\n", "\tlog {\n\t\toutput discard\n\t}\n"},
		{"\tadmin off\n", "\tadmin off\n\tpersist_config off\n"},
	} {
		if !strings.Contains(text, r.old) {
			t.Fatalf("Caddyfile.example no longer holds %q; update this test and the README", r.old)
		}
		text = strings.Replace(text, r.old, r.new, 1)
	}
	harness.LoadConfig(t, harness.Adapt(t, text))

	fromCurl := harness.RawRequest(t, harness.Loopback(port), "GET /slow?seconds=4.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nConnection: close\r\n\r\n")
	fromPython := harness.RawRequest(t, harness.Loopback(port), "GET /slow?seconds=2.5 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: python-requests/2.31.0\r\nConnection: close\r\n\r\n")

	if fromCurl.Status != 200 || string(fromCurl.Body) != "done after 4.5 seconds\n" || len(fromCurl.Interims) != 2 {
		t.Fatalf("curl: %d %q after %d interims:\n%s", fromCurl.Status, fromCurl.Body, len(fromCurl.Interims), fromCurl.Wire)
	}
	field := regexp.MustCompile(`^(\d) after (\d+(?:\.\d+)?s)$`)
	for i, in := range fromCurl.Interims {
		m := field.FindStringSubmatch(in.Header.Get("X-Progress"))
		if in.Code != 102 || m == nil || m[1] != strconv.Itoa(i+1) {
			t.Fatalf("curl: 102 number %d is %q", i+1, in.Raw)
		}
		if elapsed, _ := time.ParseDuration(m[2]); elapsed < time.Duration(i+1)*2*time.Second {
			t.Errorf("curl: 102 number %d after %v, before its time", i+1, elapsed)
		}
	}
	if fromPython.Status != 200 || len(fromPython.Interims) != 0 {
		t.Errorf("python-requests: %d after %d interims, want 200 and none:\n%s", fromPython.Status, len(fromPython.Interims), fromPython.Wire)
	}
}
