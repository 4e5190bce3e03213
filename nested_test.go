package processing

import (
	"fmt"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// TestNestedProcessingHandlersWriteInTurn: a site-wide processing and a
// second one inside a handle block both run for a request to that block.
// Each sends its 102s straight to net/http's writer (past the writers
// around it), each under its own writer's lock, from the wheel's fire
// goroutines: two 102s due together must still not be written at once.
// Under -race this fails with a data race on the connection's buffered
// writer (net/http's response.WriteHeader, from two fires' due), which
// without -race may interleave their bytes on the wire.
func TestNestedProcessingHandlersWriteInTurn(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.AfterInterims(100, "done"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 1ms
		interval 1ms
	}
	handle /inner {
		processing {
			delay 1ms
			interval 1ms
		}
		test_work slow
	}
}
`)
	for range 3 {
		res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/inner"))
		if res.Status != 200 || string(res.Body) != "done" || len(res.Interims) < 100 {
			t.Fatalf("final %d %q after %d interims:\n%s", res.Status, res.Body, len(res.Interims), res.Wire)
		}
		for i, in := range res.Interims {
			if in.Raw != harness.BareProcessing {
				t.Fatalf("interim %d is %q", i, in.Raw)
			}
		}
	}
}

// TestNestedProcessingFollowsTheInnerHandler: a request that reaches a
// processing handler inside another one's route gets the inner one's
// configuration (the more specific), from one writer: its header fields,
// its max, and with opt_in no 102 at all for a request that did not ask.
func TestNestedProcessingFollowsTheInnerHandler(t *testing.T) {
	harness.SetBehaviour(t, "nested_slow", harness.SleepThen(600*time.Millisecond, "done"))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 1ms
		interval 20ms
		header X-Outer yes
	}
	handle /inner {
		processing {
			delay 50ms
			interval 50ms
			max 3
			header X-Inner "{http.processing.count}"
		}
		test_work nested_slow
	}
	handle /quiet {
		processing {
			interval 50ms
			opt_in
		}
		test_work nested_slow
	}
	test_work nested_slow
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/inner"))
	if res.Status != 200 || string(res.Body) != "done" {
		t.Fatalf("final %d %q:\n%s", res.Status, res.Body, res.Wire)
	}
	if n := len(res.Interims); n < 1 || n > 3 {
		t.Fatalf("%d interims, want 1 to 3 (the inner max):\n%s", n, res.Wire)
	}
	for i, in := range res.Interims {
		if want := fmt.Sprintf("HTTP/1.1 102 Processing\r\nX-Inner: %d\r\n\r\n", i+1); in.Raw != want {
			t.Fatalf("interim %d is %q, want %q", i, in.Raw, want)
		}
	}
	res = harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/quiet"))
	if res.Status != 200 || len(res.Interims) != 0 {
		t.Fatalf("opt_in inner handler, no Prefer: %d after %d interims:\n%s", res.Status, len(res.Interims), res.Wire)
	}
	res = harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/quiet", "Prefer: processing"))
	if res.Status != 200 || len(res.Interims) < 2 {
		t.Fatalf("opt_in inner handler, Prefer: processing: %d after %d interims:\n%s", res.Status, len(res.Interims), res.Wire)
	}
	res = harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/other"))
	if res.Status != 200 || len(res.Interims) < 2 || res.Interims[0].Raw != "HTTP/1.1 102 Processing\r\nX-Outer: yes\r\n\r\n" {
		t.Fatalf("outer handler alone: %d after %d interims:\n%s", res.Status, len(res.Interims), res.Wire)
	}
}

// TestNestedAsyncAnswersWithItsOwn102s: a nested processing handler whose
// async mode makes a Prefer: processing request a job writes 102s of its
// own, the first with the job's Location, while the enclosing handler's
// writer sends none meanwhile (under -race, two writers at once would be a
// data race on the connection).
func TestNestedAsyncAnswersWithItsOwn102s(t *testing.T) {
	harness.SetBehaviour(t, "nested_job", harness.SleepThen(700*time.Millisecond, "done"))
	dir := harness.StorageDir(t)
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), `
http://127.0.0.1:{PORT} {
	processing {
		delay 1ms
		interval 5ms
	}
	handle /job {
		processing {
			interval 100ms
			async {
				wait 200ms
			}
		}
		test_work nested_job
	}
}
`)
	res := harness.RawRequest(t, harness.Loopback(port), harness.RawGet("/job", "Prefer: processing"))
	if res.Status != 200 || string(res.Body) != "done" {
		t.Fatalf("final %d %q:\n%s", res.Status, res.Body, res.Wire)
	}
	located := -1
	for i, in := range res.Interims {
		if in.Header.Get("Location") != "" {
			located = i
			break
		}
	}
	if located < 0 {
		t.Fatalf("no 102 carried the job's Location:\n%s", res.Wire)
	}
	// From the job's first 102 on, one every 100 ms for about 500 ms:
	// the enclosing writer's, every 5 ms, would be many more.
	if after := len(res.Interims) - located; after > 12 {
		t.Fatalf("%d interims from the job's first on, want at most 12:\n%s", after, res.Wire)
	}
}
