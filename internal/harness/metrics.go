package harness

import (
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// InterimsSentMetric is the module's counter of the 102s it sent, labelled
// by server.
const InterimsSentMetric = "caddy_http_processing_interim_responses_total"

// InterimsSent is how many 102s the module has sent in this process (on
// the given server, with "server", name). It counts every 102 the module
// wrote, also one that Go's servers drop without a byte on the wire (a 1xx
// after the final status): compare it with what a client saw. The counter
// lives for the process, so tests compare a value before with one after.
//
// It reads the counter from the running config's metrics registry, as
// Caddy's metrics handler serves it. Once no config with the processing
// handler runs (after a stop), it reads the last registry that held it:
// the module registers its process-wide counter into each config's
// registry, and an old registry still reaches it, so a 102 sent after the
// stop still counts.
func InterimsSent(t testing.TB, labels ...string) float64 {
	t.Helper()
	ctx := caddy.ActiveContext()
	var families []*dto.MetricFamily
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		var err error
		if families, err = reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	lastInterimsRegistryMu.Lock()
	defer lastInterimsRegistryMu.Unlock()
	if hasFamily(families, InterimsSentMetric) {
		lastInterimsRegistry = ctx.GetMetricsRegistry()
	} else if lastInterimsRegistry != nil {
		var err error
		if families, err = lastInterimsRegistry.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	return sumCounter(families, InterimsSentMetric, labels)
}

var (
	lastInterimsRegistryMu sync.Mutex
	lastInterimsRegistry   prometheus.Gatherer
)

func hasFamily(families []*dto.MetricFamily, name string) bool {
	for _, mf := range families {
		if mf.GetName() == name {
			return true
		}
	}
	return false
}

// sumCounter adds up the counter name's samples with the given labels.
func sumCounter(families []*dto.MetricFamily, name string, labels []string) float64 {
	var sum float64
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
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

// LoggedInterims is how many 102s the request for uri got, as Caddy's
// JSON access log at accessLog says through
// `log_append interim_count {http.vars.processing.interim_count}`: the
// count of one request among many running at once. Caddy logs a request
// once its handlers returned; it gives -1 when no entry for uri appeared
// within ten seconds.
func LoggedInterims(t testing.TB, accessLog, uri string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, entry := range ReadJSONLines(t, accessLog) {
			req, _ := entry["request"].(map[string]any)
			if req["uri"] != uri {
				continue
			}
			n, _ := entry["interim_count"].(float64)
			return int(n)
		}
		if time.Now().After(deadline) {
			return -1
		}
		time.Sleep(50 * time.Millisecond)
	}
}
