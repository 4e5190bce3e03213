// Package async is the processing handler's async mode: a request
// carrying `Prefer: respond-async` (RFC 7240 §4.1) becomes a job. If it is not done within `wait`, the client gets
// `202 Accepted` pointing at a status monitor (RFC 9110 §15.3.3) served by
// this handler, and the job's state and final response go to Caddy's
// storage, where any instance sharing that storage can answer for it.
// job.go runs a job and state.go decides its transitions; upload.go reads
// its body, result.go records and stores its response, monitor.go serves
// the monitor, access.go binds a job to its submitter, store.go and
// stored.go keep its record and the cluster's stored total, registry.go
// holds the jobs of this process, sweep.go removes expired ones, admin.go
// lists them on the admin API.
package async

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Defaults of Config, as the issue and the README state them.
const (
	defaultAsyncWait      = 2 * time.Second
	defaultAsyncMonitor   = "/.well-known/processing/jobs"
	defaultAsyncKeep      = time.Hour
	defaultAsyncMaxBody   = 16 << 20
	defaultAsyncMaxResult = 64 << 20
	defaultAsyncMaxJobs   = 1000
	defaultAsyncMaxStored = 1 << 30
	defaultAsyncRefresh   = 5 * time.Second
	defaultAsyncTimeout   = time.Hour
)

// Config turns a request carrying `Prefer: respond-async` into a job
// whose status and result a client polls at a monitor URL, follows as an
// event stream, or waits for with `Prefer: processing` (progress.go,
// sse.go).
type Config struct {
	// How long a request waits for its job before the client gets
	// `202 Accepted`. A client's `Prefer: wait=N` (RFC 7240 §4.3) lowers it
	// for its request. Duration; default 2s.
	Wait caddy.Duration `json:"wait,omitempty"`

	// The path prefix of the status monitor on this site: a job's status
	// is at `<monitor>/<id>` and its response at `<monitor>/<id>/result`.
	// The directive's matcher must match these paths. Default
	// `/.well-known/processing/jobs`.
	Monitor string `json:"monitor,omitempty"`

	// How long a finished job's status and result stay, from the job's end.
	// Duration; default 1h.
	Keep caddy.Duration `json:"keep,omitempty"`

	// The largest request body a job accepts, read in full before the job
	// starts; a larger one gets 413. Bytes; default 16 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// The largest final response a job may record; a larger one fails the
	// job. Bytes; default 64 MiB.
	MaxResult int64 `json:"max_result,omitempty"`

	// The most jobs running at once in this Caddy process; beyond it a new
	// one gets 503 with Retry-After. A request holds a slot from the end
	// of its upload on, not while it uploads. Count; default 1000.
	MaxJobs int `json:"max_jobs,omitempty"`

	// How long a job's request body may take to arrive, from the first
	// read to the last; a slower one gets 408 and its connection closes.
	// Duration; default 1m.
	UploadTimeout caddy.Duration `json:"upload_timeout,omitempty"`

	// The most bytes of results stored at once by every instance sharing
	// the storage, counted in one record there. A new job gets 503 while
	// less than max_result is left; a result that does not fit fails its
	// job. Bytes; default 1 GiB.
	MaxStored int64 `json:"max_stored,omitempty"`

	// How often the instance running a job writes that it is still
	// running and checks whether the job was deleted elsewhere; a job not
	// refreshed for three periods is ended as failed, "instance lost", by
	// the first instance that sees it. Duration; default 5s.
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// The longest a job may run: then it fails with the reason "timeout:
	// ran longer than <timeout>" and its handlers' context is cancelled.
	// Duration; default 1h.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Placeholders whose values, with the Authorization field, bind a job
	// to its submitter: the monitor answers only requests for which they
	// resolve the same, such as `{http.request.cookie.session}` for a site
	// that authenticates with a session cookie. A job whose submitter had
	// no Authorization and whose bind values are all empty is served to
	// anyone holding its id, without Set-Cookie. Default: Authorization
	// only.
	Bind []string `json:"bind,omitempty"`

	wait          time.Duration
	uploadTimeout time.Duration
	keep          time.Duration
	refresh       time.Duration
	timeout       time.Duration
	storage       certmagic.Storage
	sweeper       *sweeper // of storage, in the registry
	logger        *zap.Logger
	monitorSl     string // Monitor + "/"
	acquired      bool
	progress      progressConfig // progress.go: the handler's interval and max, the events app
}

// Provision fills in the defaults and joins the process-wide job registry.
func (a *Config) Provision(ctx caddy.Context) error {
	// Caddy validates after provisioning; the registry must not be joined
	// with values that cannot work.
	if err := a.Validate(); err != nil {
		return err
	}
	a.wait = durationOr(a.Wait, defaultAsyncWait)
	a.uploadTimeout = durationOr(a.UploadTimeout, defaultAsyncUploadTimeout)
	a.keep = durationOr(a.Keep, defaultAsyncKeep)
	a.refresh = durationOr(a.Refresh, defaultAsyncRefresh)
	a.timeout = durationOr(a.Timeout, defaultAsyncTimeout)
	if a.Monitor == "" {
		a.Monitor = defaultAsyncMonitor
	}
	a.Monitor = strings.TrimSuffix(a.Monitor, "/")
	a.monitorSl = a.Monitor + "/"
	if a.MaxBody == 0 {
		a.MaxBody = defaultAsyncMaxBody
	}
	if a.MaxResult == 0 {
		a.MaxResult = defaultAsyncMaxResult
	}
	if a.MaxJobs == 0 {
		a.MaxJobs = defaultAsyncMaxJobs
	}
	if a.MaxStored == 0 {
		a.MaxStored = defaultAsyncMaxStored
	}
	// A context made by caddy.NewContext without a loaded config has no
	// storage, and Storage dereferences its nil config: async mode needs
	// a config that Caddy loads (caddy.Load, caddy.Validate), as every
	// test of it does.
	a.storage = ctx.Storage()
	if a.storage == nil {
		return fmt.Errorf("async: this config has no storage")
	}
	a.logger = ctx.Logger().Named("async")
	a.provisionEvents(ctx) // events.go
	if err := registerAsyncMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if err := registry.acquire(ctx, a); err != nil {
		return err
	}
	a.acquired = true
	return nil
}

func durationOr(d caddy.Duration, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// Validate rejects values that cannot work; zero means the default.
func (a *Config) Validate() error {
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{{"wait", a.Wait}, {"keep", a.Keep}, {"refresh", a.Refresh}, {"timeout", a.Timeout}, {"upload_timeout", a.UploadTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("async: %s must be a positive duration, got %s", d.name, time.Duration(d.v))
		}
	}
	if err := validateBind(a.Bind); err != nil {
		return fmt.Errorf("async: bind: %v", err)
	}
	if a.Monitor != "" {
		if err := validateMonitorPath(a.Monitor); err != nil {
			return fmt.Errorf("async: monitor: %v", err)
		}
	}
	for _, s := range []struct {
		name string
		v    int64
	}{{"max_body", a.MaxBody}, {"max_result", a.MaxResult}, {"max_stored", a.MaxStored}, {"max_jobs", int64(a.MaxJobs)}} {
		if s.v < 0 {
			return fmt.Errorf("async: %s must be positive, got %d", s.name, s.v)
		}
	}
	return nil
}

// validateMonitorPath accepts an absolute, clean path with no placeholder:
// the monitor is matched literally against request paths.
func validateMonitorPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("must be a path starting with /, got %q", p)
	case strings.ContainsAny(p, "{}?#*% \t"):
		return fmt.Errorf("must be a plain path without placeholders, wildcards, query or escapes, got %q", p)
	case strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/.."):
		return fmt.Errorf("must be a clean path, got %q", p)
	case p == "/":
		return fmt.Errorf("must not be the whole site, got %q", p)
	}
	return nil
}

// Cleanup leaves the registry; the last one out cancels the running jobs.
func (a *Config) Cleanup() error {
	if a.acquired {
		a.acquired = false
		registry.release(a)
	}
	return nil
}

// admit checks the limits before a job starts: max_jobs in this process,
// and max_stored in the cluster, which refuses while less than one
// max_result is left, so that a job admitted alone always has room for its
// result. why names the limit reached, or is "".
func (a *Config) admit(ctx context.Context, j *job) (why string) {
	if why := a.atLimit(ctx); why != "" {
		return why
	}
	if !registry.reserve(j, a.MaxJobs) {
		return "max_jobs"
	}
	return ""
}

// atLimit reports the limit a new job would pass, without taking a slot:
// the check made before a request's body is read.
func (a *Config) atLimit(ctx context.Context) (why string) {
	sctx, cancel := context.WithTimeout(ctx, storedWait)
	stored, err := loadStored(sctx, a.storage)
	cancel()
	switch {
	case err != nil:
		// Admitted: the job reports the storage's failure if it lasts.
		a.logger.Warn("reading the stored async results' total", zap.Error(err))
	case stored > max(a.MaxStored-a.MaxResult, 0):
		return "max_stored"
	}
	if registry.running() >= a.MaxJobs {
		return "max_jobs"
	}
	return ""
}

// Serve is async mode's one entry point, called at the top of the
// processing handler's ServeHTTP. It answers monitor
// requests and requests that ask to go async; handled is false for every
// other request, which the handler serves as usual.
func (a *Config) Serve(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) (handled bool, err error) {
	if strings.HasPrefix(r.URL.Path, a.monitorSl) || r.URL.Path == a.Monitor {
		return true, a.serveMonitor(w, r)
	}
	pref := preferAsync(r.Header["Prefer"])
	// progress.go: `Prefer: processing` makes a job too, whose client
	// waits with 102s; never for HTTP/1.0, which may get no 102.
	waitsWithInterims := pref.processing && !pref.respondAsync && canSendInterim(r)
	if !pref.respondAsync && !waitsWithInterims || !canGoAsync(r) {
		return false, nil
	}
	wait := a.wait
	if pref.hasWait && pref.wait < wait {
		wait = pref.wait
	}
	return true, a.submit(w, r, next, wait, waitsWithInterims)
}

// canGoAsync rules out what a recorded response cannot carry: a protocol
// switch (Upgrade, RFC 9110 §7.8, such as WebSocket) and CONNECT tunnels.
func canGoAsync(r *http.Request) bool {
	if r.Method == http.MethodConnect {
		return false
	}
	if r.Header.Get("Upgrade") != "" {
		return false
	}
	return true
}
