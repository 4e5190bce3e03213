package async

import (
	"math"
	"strconv"

	"github.com/c055b0d7/caddy-processing/internal/caddyutil"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// UnmarshalCaddyfile reads the `async` block of the directive:
//
//	async {
//		wait       <duration>
//		monitor    <path>
//		keep       <duration>
//		refresh    <duration>
//		timeout    <duration>
//		upload_timeout <duration>
//		max_body   <size>
//		max_result <size>
//		max_jobs   <count>
//		max_stored <size>
//		bind       <placeholder>...
//	}
//
// Sizes are read as request_body's max_size is (go-humanize, already a
// dependency of Caddy): 16MiB, 1GB, 512KiB, or a number of bytes.
func (a *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if asyncExpectation(sub) == "" {
			return d.Errf("unrecognized async subdirective %q; expected wait, monitor, keep, refresh, timeout, upload_timeout, max_body, max_result, max_jobs, max_stored or bind", sub)
		}
		if seen[sub] {
			return d.Errf("async: %s: already given", sub)
		}
		seen[sub] = true
		if sub == "bind" {
			a.Bind = d.RemainingArgs()
			if len(a.Bind) == 0 {
				return d.Errf("async: bind: expected %s", asyncExpectation(sub))
			}
			if err := validateBind(a.Bind); err != nil {
				return d.Errf("async: bind: %v", err)
			}
			continue
		}
		if !d.NextArg() {
			return d.Errf("async: %s: expected %s", sub, asyncExpectation(sub))
		}
		switch sub {
		case "wait", "keep", "refresh", "timeout", "upload_timeout":
			dur, err := caddyutil.ParseDuration(d, "async: "+sub)
			if err != nil {
				return err
			}
			switch sub {
			case "wait":
				a.Wait = dur
			case "keep":
				a.Keep = dur
			case "timeout":
				a.Timeout = dur
			case "upload_timeout":
				a.UploadTimeout = dur
			default:
				a.Refresh = dur
			}
		case "monitor":
			if err := validateMonitorPath(d.Val()); err != nil {
				return d.Errf("async: monitor: %v", err)
			}
			a.Monitor = d.Val()
		case "max_body", "max_result", "max_stored":
			n, err := humanize.ParseBytes(d.Val())
			if err != nil || n == 0 || n > math.MaxInt64 {
				return d.Errf("async: %s: expected %s, got %q", sub, asyncExpectation(sub), d.Val())
			}
			switch sub {
			case "max_body":
				a.MaxBody = int64(n)
			case "max_result":
				a.MaxResult = int64(n)
			default:
				a.MaxStored = int64(n)
			}
		case "max_jobs":
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("async: max_jobs: expected %s, got %q", asyncExpectation(sub), d.Val())
			}
			a.MaxJobs = n
		}
		if d.NextArg() {
			return d.Errf("async: %s: unexpected argument %q", sub, d.Val())
		}
	}
	return nil
}

// asyncExpectation says what a subdirective's value looks like.
func asyncExpectation(sub string) string {
	switch sub {
	case "wait", "keep", "refresh", "timeout", "upload_timeout":
		return "a duration such as 2s"
	case "monitor":
		return "a path such as /.well-known/processing/jobs"
	case "max_body", "max_result", "max_stored":
		return "a positive size such as 16MiB"
	case "max_jobs":
		return "a positive count such as 1000"
	case "bind":
		return "one or more placeholders such as {http.request.cookie.session}"
	}
	return ""
}
