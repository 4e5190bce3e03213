package async_test

import (
	"os"
	"testing"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end: no job, no sweep, no server. It removes the demo binary the cluster
// tests built.
func TestMain(m *testing.M) {
	opts := append(harness.LeakOptions(), goleak.Cleanup(func(code int) {
		if demoDir != "" {
			_ = os.RemoveAll(demoDir)
		}
		os.Exit(code)
	}))
	goleak.VerifyTestMain(m, opts...)
}
