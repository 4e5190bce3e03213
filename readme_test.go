package processing

// Claims of the README's options table that no behaviour test covered.

import (
	"context"
	"regexp"
	"testing"
	"time"

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
// time since the request reached the handler, in milliseconds, written as
// Go writes a duration ("200ms", "20.001s").
func TestElapsedPlaceholderIsTimeSinceStart(t *testing.T) {
	setBehaviour(t, "slow", sleepThen(time.Second, "done"))
	port, _ := startCaddy(t, `
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
	res := rawRequest(t, addr(port), getClose)
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
