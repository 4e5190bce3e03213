package async

// A job's life as Caddy events (modules/caddyevents): a deployment
// subscribes any event handler module (exec, a webhook, NATS) in the
// `events` app; this module calls no URL itself. The names, snake_case as
// Caddy's own (cert_obtained, healthy), carry the module's name so that a
// subscription by name alone catches no other module's events:
//
//	processing_job_started    the request became a job (202, or the first 102)
//	processing_job_succeeded  the job's response is stored
//	processing_job_failed     the job failed (reason says why)
//	processing_job_canceled   DELETE, or Caddy stopped
//
// Each carries id, monitor (the status document's path), status, reason,
// method, path and duration (seconds since the request arrived). The origin
// module is http.handlers.processing. A job reported lost is not an event:
// the instance that ran it is gone, and no other one knows when it died.

import (
	"context"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// The events' names.
const (
	EventJobStarted   = "processing_job_started"
	EventJobSucceeded = "processing_job_succeeded"
	EventJobFailed    = "processing_job_failed"
	EventJobCanceled  = "processing_job_canceled"
)

// eventEmitter is the events app and the context events are emitted with.
type eventEmitter struct {
	app *caddyevents.App
	// ctx is the processing handler's provisioning context (its module is
	// the events' origin), without its cancellation: a job may end after
	// its config was unloaded (a reload, or `caddy stop` cancelling it),
	// and caddyevents stops calling handlers on a cancelled context.
	ctx caddy.Context
}

// provisionEvents finds the events app if the config has one; without it
// no event is emitted (reverse_proxy's ctx.App("events") would make an
// empty one).
func (a *Config) provisionEvents(ctx caddy.Context) {
	app, err := ctx.AppIfConfigured("events")
	if err != nil {
		return
	}
	ev, ok := app.(*caddyevents.App)
	if !ok {
		return
	}
	ectx := ctx
	ectx.Context = context.WithoutCancel(ctx.Context)
	a.progress.events = &eventEmitter{app: ev, ctx: ectx}
}

// emit sends one event of the job's, synchronously as Caddy's own modules
// do (caddyevents.App.Emit).
func (j *job) emit(name, status, reason string) {
	j.a.emitEvent(name, j.id, j.method, j.path, j.created, status, reason)
}

// emitRecord sends one event of a job known by its record, such as one
// deleted on this instance while it runs on another.
func (a *Config) emitRecord(name string, rec jobRecord, status, reason string) {
	a.emitEvent(name, rec.ID, rec.Method, rec.Path, rec.Created, status, reason)
}

func (a *Config) emitEvent(name, id, method, path string, created time.Time, status, reason string) {
	e := a.progress.events
	if e == nil {
		return
	}
	e.app.Emit(e.ctx, name, map[string]any{
		"id":       id,
		"monitor":  a.monitorSl + id,
		"status":   status,
		"reason":   reason,
		"method":   method,
		"path":     path,
		"duration": time.Since(created).Seconds(),
	})
}

// emitEnded emits the event of a job's outcome.
func (j *job) emitEnded(status, reason string) {
	switch status {
	case statusSucceeded:
		j.emit(EventJobSucceeded, status, reason)
	case statusCanceled:
		j.emit(EventJobCanceled, status, reason)
	default:
		j.emit(EventJobFailed, status, reason)
	}
}
