package processing

import (
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end: no tick, no request goroutine, no server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, harness.LeakOptions()...)
}

// relAssertNoMoreInterims checks that the 102 count stays where it is for
// a while: no timer of a finished request fires.
func relAssertNoMoreInterims(t testing.TB, quiet time.Duration) {
	t.Helper()
	before := harness.InterimsSent(t)
	time.Sleep(quiet)
	if after := harness.InterimsSent(t); after != before {
		t.Errorf("%v 102s sent after every request had ended", after-before)
	}
}
