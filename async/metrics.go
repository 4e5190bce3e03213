package async

import (
	"github.com/c055b0d7/caddy-processing/internal/caddyutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Async mode's metrics live for the whole process, like the core's, so that a reload does not reset them.
var (
	// asyncOutcomes counts jobs by how they ended: direct (answered within
	// wait), succeeded, failed, canceled, deleted (by a client), expired
	// (removed by the sweep) and rejected (503 at a limit).
	asyncOutcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "http_processing",
		Name:      "async_jobs_total",
		Help:      "Number of async jobs, by outcome.",
	}, []string{"outcome"})

	asyncRunning = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "http_processing",
		Name:      "async_jobs_running",
		Help:      "Number of async jobs running in this process.",
	})
)

// registerAsyncMetrics adds the async metrics to reg unless they are there.
func registerAsyncMetrics(reg prometheus.Registerer) error {
	return caddyutil.RegisterCollectors(reg, asyncOutcomes, asyncRunning)
}
