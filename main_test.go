package processing

import (
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// TestMain checks that nothing the tests started is still running at the
// end: no tick, no request goroutine, no server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, harness.LeakOptions()...)
}

// relInterimsSent is the module's process-wide count of 102s sent, read
// through a registry as Prometheus would scrape it.
func relInterimsSent(t testing.TB) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(interimsSent)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// relAssertNoMoreInterims checks that the 102 count stays where it is for
// a while: no timer of a finished request fires.
func relAssertNoMoreInterims(t testing.TB, quiet time.Duration) {
	t.Helper()
	before := relInterimsSent(t)
	time.Sleep(quiet)
	if after := relInterimsSent(t); after != before {
		t.Errorf("%v 102s sent after every request had ended", after-before)
	}
}
