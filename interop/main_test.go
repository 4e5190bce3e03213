// Package interop is the lab: real clients (curl, Python, Node, Java,
// cadaver, rclone, browsers) and real proxies (nginx, Apache, HAProxy,
// Varnish, Squid) against a Caddy with the module, and the load programs.
// It is a module of its own so that what it needs stays out of the
// module users build.
package interop

import (
	"testing"

	_ "github.com/c055b0d7/caddy-processing"
	"github.com/c055b0d7/caddy-processing/internal/harness"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, harness.LeakOptions()...)
}
