// Package processing is a Caddy HTTP handler that sends 102 Processing
// interim responses (RFC 2518 §10.1) while the handlers after it are still
// working on a request, so that clients and intermediaries whose idle timers
// would otherwise cut a long request keep seeing bytes.
package processing

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/c055b0d7/caddy-processing/async"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// DefaultInterval is the time between interim responses when none is
// configured: RFC 2518 §10.1 suggests a server send 102 only for a request
// that takes "significant time", giving 20 seconds as its example.
const DefaultInterval = 20 * time.Second

// The module's own placeholders, filled in separately for each 102 on the
// goroutine that sends it (Caddy's replacer is not safe to use there).
const (
	countPlaceholder   = "{http.processing.count}"
	elapsedPlaceholder = "{http.processing.elapsed}"
)

// InterimCountVar is the name of the request variable (caddyhttp.SetVar)
// that holds how many 102 responses this module sent for the request, so
// that `log_append` can add `{http.vars.processing.interim_count}` to the
// access log.
const InterimCountVar = "processing.interim_count"

// Handler sends `102 Processing` interim responses while the rest of the
// route is still working on a request, first after `delay` and then every
// `interval`, until the final response starts. A 102 carries only the
// configured `header` fields, never a header another handler has set.
// HTTP/1.0 requests never get one (RFC 9110 §15.2).
type Handler struct {
	// Time between two 102 responses, a duration: a string such as "20s"
	// or "1m30s", or an integer of nanoseconds. Must be positive.
	// Default: 20s, the guidance of RFC 2518 §10.1.
	Interval caddy.Duration `json:"interval,omitempty"`

	// How long a request must have run, since Caddy received it, before
	// its first 102, a duration like `interval`; a request with a body
	// gets its first 102 no sooner than the end of its body, as the next
	// handler reads it. Must be positive. Default: the interval. A request
	// carrying `Prefer: processing` gets its first 102 at once instead.
	Delay caddy.Duration `json:"delay,omitempty"`

	// At most this many 102 responses for one request, a count. Default: 0,
	// no limit. Some clients and proxies give up after a handful of interim
	// responses (quic-go and old Go clients after 5, Java's HttpClient
	// after 8, Apache mod_proxy after 10).
	Max int `json:"max,omitempty"`

	// Send 102 responses only to requests that ask for them with
	// `Prefer: processing` (draft-wright-http-progress), for clients that
	// take a 102 for the final response. Default: false, every request.
	OptIn bool `json:"opt_in,omitempty"`

	// Header fields put on every 102, field name to a list of values.
	// Default: none, a bare `102 Processing`. Caddy placeholders are
	// resolved once when the request starts; the module's own
	// `{http.processing.count}` (1 for the first 102) and
	// `{http.processing.elapsed}` (time since Caddy received the request,
	// such as `20.001s`) are filled in for each 102.
	// Content-Length, Transfer-Encoding, Connection, Trailer and Upgrade
	// are refused.
	Header http.Header `json:"header,omitempty"`

	// Async mode: a request carrying `Prefer: respond-async` (RFC 7240
	// §4.1) becomes a job; if it is not done within `wait` the client gets
	// `202 Accepted` and polls a status monitor for the result. A request
	// carrying `Prefer: processing` (draft-wright-http-progress) becomes a
	// job too, but its client keeps waiting, with 102s carrying the
	// monitor's Location and the job's Progress. Default: off, every
	// request is served as without it.
	Async *async.Config `json:"async,omitempty"`

	interval time.Duration
	delay    time.Duration
	// grid is the coalescing granularity: 102s fall due on multiples of
	// it (see Provision).
	grid   time.Duration
	wheel  *wheel
	fields []headerField
	// resolveFields is set when a field value holds a Caddy placeholder,
	// which must be resolved on the request's goroutine.
	resolveFields bool
	logger        *zap.Logger
}

// headerField is one configured 102 header field.
type headerField struct {
	name   string
	values []string
	// perInterim: a value holds one of the module's own placeholders.
	perInterim bool
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.processing",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the handler.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.interval = time.Duration(h.Interval)
	if h.interval == 0 {
		h.interval = DefaultInterval
	}
	h.delay = time.Duration(h.Delay)
	if h.delay == 0 {
		h.delay = h.interval
	}
	// The 102s of HTTP/2 and HTTP/3 requests are due on a process-wide
	// grid, so that those that fall due close together go out in the same
	// tick and the process wakes once for them. The grid moves a 102
	// later, never earlier, by less than one grid step: an eighth of the
	// interval, at least the wheel's tick and at most maxGrid. HTTP/1.1
	// requests keep to the wheel's tick (interimWriter.grid): a coarser
	// grid there only makes each 102 later.
	h.grid = min(max(h.interval/8, wheelTick), maxGrid)
	w, err := acquireWheel()
	if err != nil {
		return err
	}
	h.wheel = w
	h.fields = h.fields[:0]
	h.resolveFields = false
	for name, values := range h.Header {
		f := headerField{name: http.CanonicalHeaderKey(name), values: values}
		for _, v := range values {
			if strings.Contains(v, countPlaceholder) || strings.Contains(v, elapsedPlaceholder) {
				f.perInterim = true
			}
			if hasCaddyPlaceholder(v) {
				h.resolveFields = true
			}
		}
		h.fields = append(h.fields, f)
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if h.Async != nil {
		// Async mode writes the 102s of the requests it takes itself
		// (async/progress.go), at this handler's pace.
		h.Async.SetInterim(h.interval, h.Max)
		return h.Async.Provision(ctx)
	}
	return nil
}

// maxGrid bounds the coalescing grid, and so how much later than its slot
// a 102 may go out.
const maxGrid = 25 * time.Millisecond

// Cleanup lets go of the wheel, and of async mode's job registry: when the
// last handler with async goes (caddy stop), its running jobs are
// cancelled. Requests still waiting keep the wheel: it stops when nothing
// waits.
func (h *Handler) Cleanup() error {
	// Caddy calls Cleanup after a failed Provision too, which may not
	// have taken the wheel or joined the registry (cleanup checks). The
	// field stays: requests of this config may still be using it.
	if h.wheel != nil {
		releaseWheel()
	}
	if h.Async != nil {
		_ = h.Async.Cleanup()
	}
	return nil
}

// Validate rejects a configuration that cannot work.
func (h *Handler) Validate() error {
	if h.Interval < 0 {
		return fmt.Errorf("interval must be a positive duration, got %s", time.Duration(h.Interval))
	}
	if h.Delay < 0 {
		return fmt.Errorf("delay must be a positive duration, got %s", time.Duration(h.Delay))
	}
	if h.Max < 0 {
		return fmt.Errorf("max must be 0 (no limit) or more, got %d", h.Max)
	}
	for name, values := range h.Header {
		if err := validateHeaderField(name, values); err != nil {
			return err
		}
	}
	if h.Async != nil {
		return h.Async.Validate()
	}
	return nil
}

// validateHeaderField checks one configured 102 header field. Content-Length
// and Transfer-Encoding describe content, which a 1xx never has (RFC 9110
// §15.2), and Go's server drops them from a 1xx anyway.
func validateHeaderField(name string, values []string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("header: %q is not a valid header field name", name)
	}
	switch http.CanonicalHeaderKey(name) {
	case "Content-Length", "Transfer-Encoding", "Connection", "Trailer", "Upgrade":
		return fmt.Errorf("header: %s may not be sent on an interim response", name)
	}
	if len(values) == 0 {
		return fmt.Errorf("header: field %s has no value", name)
	}
	for _, v := range values {
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("header: value %q of field %s holds a control character", v, name)
		}
	}
	return nil
}

// hasCaddyPlaceholder reports whether v holds a placeholder other than the
// module's own two.
func hasCaddyPlaceholder(v string) bool {
	v = strings.ReplaceAll(v, countPlaceholder, "")
	v = strings.ReplaceAll(v, elapsedPlaceholder, "")
	return strings.Contains(v, "{")
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
