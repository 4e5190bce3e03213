package processing

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// The metrics live for the whole process and are registered into the
// metrics registry of every config that uses the module: Caddy gives each
// config load a new registry, and counters made per load would drop back to
// zero on every `caddy reload`. Handlers of one config (two sites, two
// routes) find the metrics already registered and share them.
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
	return registerCollectors(reg, interimsSent, requestsWithInterim, interimLateness)
}

// registerCollectors adds each collector to reg unless it is there already.
func registerCollectors(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}
