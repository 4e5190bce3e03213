package async_test

import (
	"testing"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end: no job, no sweep, no server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, harness.LeakOptions()...)
}
