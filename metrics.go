package processing

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// The counters live for the whole process and are registered into the
// metrics registry of every config that uses the module: Caddy gives each
// config load a new registry, and counters made per load would drop back to
// zero on every `caddy reload`. Handlers of one config (two sites, two
// routes) find the counters already registered and share them.
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
)

// registerMetrics adds the counters to reg unless they are there already.
func registerMetrics(reg prometheus.Registerer) error {
	return registerCollectors(reg, interimsSent, requestsWithInterim)
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
