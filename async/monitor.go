package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// serveMonitor answers the status monitor (RFC 9110 §15.3.3), after the
// Azure asynchronous request-reply pattern:
//
//	GET    <monitor>/<id>         200 and the status while running;
//	                              303 to <monitor>/<id>/result on success;
//	                              200 and the status when failed or canceled
//	GET    <monitor>/<id>/result  the recorded response
//	DELETE <monitor>/<id>         cancel and forget the job: 204
//
// HEAD works as GET. An unknown, expired, malformed or foreign id (an
// Authorization other than the submitter's) answers 404, the same in every
// case, so that a client learns nothing about ids it does not hold (the
// binding, access.go). There is no listing.
func (a *Config) serveMonitor(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, a.monitorSl)
	id, sub, hasSub := strings.Cut(rest, "/")
	if r.URL.Path == a.Monitor || !validJobID(id) || (hasSub && sub != "result") {
		return notFound(w, r)
	}
	isResult := hasSub
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		if isResult {
			return methodNotAllowed(w, "GET, HEAD")
		}
	default:
		if isResult {
			return methodNotAllowed(w, "GET, HEAD")
		}
		return methodNotAllowed(w, "GET, HEAD, DELETE")
	}

	ctx := r.Context()
	rec, err := loadJobRecord(ctx, a.storage, id)
	if errors.Is(err, errNoRecord) {
		return notFound(w, r)
	}
	if err != nil {
		a.logger.Error("loading an async job's record", zap.String("id", id), zap.Error(err))
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	if !a.bindingMatches(rec, r) {
		return notFound(w, r)
	}
	now := time.Now()
	local := registry.lookup(id)
	if rec.Status == statusRunning && local == nil && rec.lostAt().Before(now) {
		// Not refreshed for three periods: the first instance to see it
		// ends it, under the job's lock (state.go); a storage that fails
		// meanwhile is reported as such, not as a lost instance.
		var declared bool
		rec, declared, err = declareLost(ctx, a.storage, id)
		if errors.Is(err, errGone) {
			return notFound(w, r)
		}
		if err != nil {
			a.logger.Error("declaring an async job lost", zap.String("id", id), zap.Error(err))
			return caddyhttp.Error(http.StatusInternalServerError, storageError{err})
		}
		if declared {
			a.emitRecord(EventJobFailed, rec, rec.Status, rec.Reason)
		}
		now = time.Now()
	}
	view := rec
	if view.Status != statusRunning && now.After(view.Ended.Add(rec.Keep)) {
		return notFound(w, r) // expired; the sweep deletes it
	}

	if r.Method == http.MethodDelete {
		return a.deleteJob(ctx, w, r, view, local)
	}
	if isResult {
		return a.serveResult(ctx, w, r, view)
	}
	// sse.go: the live progress of a job running here, the event stream,
	// and 102s until the job ends for `Prefer: processing`.
	if local != nil && view.Status == statusRunning {
		view.Progress = local.latestProgress()
	}
	if wantsEventStream(r) {
		return a.serveEvents(w, r, view, local)
	}
	if view.Status == statusRunning && wantsInterims(r) {
		var gone bool
		if view, gone = a.waitOnMonitor(w, r, view, local); gone {
			return notFound(w, r)
		}
		now = time.Now()
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	switch view.Status {
	case statusRunning:
		h.Set("Retry-After", retryAfter(now.Sub(rec.Created)))
		return writeJSON(w, r, http.StatusOK, view.public(now))
	case statusSucceeded:
		h.Set("Location", a.monitorSl+id+"/result")
		return writeJSON(w, r, http.StatusSeeOther, view.public(now))
	default:
		return writeJSON(w, r, http.StatusOK, view.public(now))
	}
}

// serveResult writes the recorded response: its status, its end-to-end
// header fields and its body byte for byte, streamed from storage a piece
// at a time (result.go).
func (a *Config) serveResult(ctx context.Context, w http.ResponseWriter, r *http.Request, rec jobRecord) error {
	if rec.Status != statusSucceeded {
		return notFound(w, r)
	}
	res, inline, err := loadResultHead(ctx, a.storage, rec.ID)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || ctx.Err() != nil || !a.storage.Exists(ctx, jobStatusKey(rec.ID)) {
			return notFound(w, r) // deleted meanwhile
		}
		a.logger.Error("loading an async job's result", zap.String("id", rec.ID), zap.Error(err))
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h := w.Header()
	maps.Copy(h, res.Header)
	if r.Method == http.MethodHead {
		// A HEAD job's result announces its handlers' length; any other
		// the length of the body a GET gets (RFC 9110 §9.3.2).
		n := res.Size
		if res.HeadLength != 0 {
			n = res.HeadLength
		}
		if n >= 0 {
			h.Set("Content-Length", strconv.FormatInt(n, 10))
		}
		w.WriteHeader(res.Status)
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(res.Size, 10))
	w.WriteHeader(res.Status)
	if inline != nil {
		_, err = w.Write(inline)
		return err
	}
	if err := writeResultBody(ctx, a.storage, w, rec.ID, res); err != nil {
		a.logger.Error("serving an async job's result", zap.String("id", rec.ID), zap.Error(err))
		return err
	}
	return nil
}

// deleteJob deletes what is stored of a job, under the job's lock, so
// that a running job, here or on another instance, stores nothing after
// (state.go); a job running here has its handlers' context cancelled at
// once, one running elsewhere at its next refresh or when it commits.
func (a *Config) deleteJob(ctx context.Context, w http.ResponseWriter, r *http.Request, rec jobRecord, local *job) error {
	id := rec.ID
	found, err := deleteJobFolder(ctx, a.storage, id)
	if err != nil {
		return a.storageFailure(id, err)
	}
	if !found {
		return notFound(w, r) // deleted meanwhile
	}
	if local != nil {
		local.stopHandlers(errDeleted)
	}
	if rec.Status == statusRunning {
		a.emitRecord(EventJobCanceled, rec, statusCanceled, errDeleted.Error()) // events.go
	}
	asyncOutcomes.WithLabelValues("deleted").Inc()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *Config) storageFailure(id string, err error) error {
	a.logger.Error("deleting an async job", zap.String("id", id), zap.Error(err))
	return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("async: deleting job: %w", err))
}

// notFound answers 404 itself rather than returning an error to Caddy, so
// that every 404 of the monitor is the same bytes whatever the cause.
func notFound(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, r, http.StatusNotFound, map[string]string{"error": "no such job"})
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	w.WriteHeader(http.StatusMethodNotAllowed)
	return nil
}

// writeJSON writes v as the whole response.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err = w.Write(b)
	return err
}
