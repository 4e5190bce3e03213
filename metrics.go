package processing

import (
	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics live for the whole process (caddyutil.RegisterCollectors says
// why).
var (
	interimsSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_processing",
		Name:      "interim_responses_total",
		Help:      "Number of 102 Processing interim responses sent.",
	}, []string{"server"})

	requestsWithInterim = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_processing",
		Name:      "requests_total",
		Help:      "Number of requests that received at least one 102 Processing interim response.",
	}, []string{"server"})

	// interimLateness is how late each scheduled 102 went out against the
	// time its schedule set (delay, then every interval), including the
	// coalescing grid on HTTP/2 and HTTP/3. A client's own measure adds
	// the time the server took to accept and read the request, and the
	// client's own delays; this one is the module's alone.
	interimLateness = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy",
		Subsystem: "http_processing",
		Name:      "interim_lateness_seconds",
		Help:      "How late each scheduled 102 Processing interim response was sent, against its schedule.",
		Buckets:   []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"server"})
)

// registerMetrics adds the metrics to reg unless they are there already.
func registerMetrics(reg prometheus.Registerer) error {
	return caddyutil.RegisterCollectors(reg, interimsSent, requestsWithInterim, interimLateness)
}
