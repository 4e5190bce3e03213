package processing

import (
	"testing"

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
