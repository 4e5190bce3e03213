// Package caddyutil holds what both halves of the module (the 102 core and
// async mode) need from Caddy in the same way: reading a duration from a
// Caddyfile, registering process-wide metrics, and reaching net/http's own
// response writer.
package caddyutil

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
)

// ParseDuration reads the dispenser's current token as a positive duration;
// what names the option in the error, which d.Errf places at the file and
// line.
func ParseDuration(d *caddyfile.Dispenser, what string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: expected a duration such as 20s, got %q", what, d.Val())
	}
	if dur <= 0 {
		return 0, d.Errf("%s: must be a positive duration, got %q", what, d.Val())
	}
	return caddy.Duration(dur), nil
}

// RegisterCollectors adds each collector to reg unless it is there already.
// The module's metrics live for the whole process and are registered into
// the metrics registry of every config that uses them: Caddy gives each
// config load a new registry, and counters made per load would drop back to
// zero on every `caddy reload`. Handlers of one config (two sites, two
// routes) find the metrics already registered and share them.
func RegisterCollectors(reg prometheus.Registerer, collectors ...prometheus.Collector) error {
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

// Innermost follows Unwrap down to the writer of net/http (or quic-go).
// An interim response goes there, past the writers Caddy's server puts
// outside the route: its access-log recorder and metrics wrapper take any
// WriteHeader call as the response's status, and would record 102. Caddy's
// wrappers share that writer's header map.
func Innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}
