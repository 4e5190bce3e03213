package harness

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// InterimsSentMetric is the module's counter of the 102s it sent, labelled
// by server.
const InterimsSentMetric = "caddy_http_processing_interim_responses_total"

// InterimsSent is how many 102s the module has sent in this process (on
// the given server, with "server", name), as the running config's metrics
// registry holds the counter. It counts every 102 the module wrote, also
// one that Go's servers drop without a byte on the wire (a 1xx after the
// final status): compare it with what a client saw. Call it while a config
// with the processing handler runs; the counter lives for the process, so
// tests compare a value before with one after.
func InterimsSent(t testing.TB, labels ...string) float64 {
	t.Helper()
	return CounterValue(t, InterimsSentMetric, labels...)
}

// HistogramSnapshot is a histogram's observations so far: their count and
// sum, and how many fell at or below each bucket's upper bound.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64 // upper bound: cumulative count
}

// Histogram reads the histogram name with the given label values (name,
// value pairs) from the running config's metrics registry, as CounterValue
// reads a counter.
func Histogram(t testing.TB, name string, labels ...string) HistogramSnapshot {
	t.Helper()
	ctx := caddy.ActiveContext()
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	h := HistogramSnapshot{Buckets: map[float64]uint64{}}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) || m.GetHistogram() == nil {
				continue
			}
			hist := m.GetHistogram()
			h.Count += hist.GetSampleCount()
			h.Sum += hist.GetSampleSum()
			for _, b := range hist.GetBucket() {
				h.Buckets[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
	}
	return h
}

// Since is what was observed between before and h.
func (h HistogramSnapshot) Since(before HistogramSnapshot) HistogramSnapshot {
	d := HistogramSnapshot{Count: h.Count - before.Count, Sum: h.Sum - before.Sum, Buckets: map[float64]uint64{}}
	for le, n := range h.Buckets {
		d.Buckets[le] = n - before.Buckets[le]
	}
	return d
}
