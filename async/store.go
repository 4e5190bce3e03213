package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Storage layout, under a prefix of the module's own in Caddy's storage:
//
//	processing/jobs/<id>/status.json  the job record (jobRecord)
//	processing/jobs/<id>/result       the recorded response's head (result.go)
//	processing/jobs/<id>/body/<n>     its body, in pieces (result.go)
//	processing/stored.json            the cluster's stored result bytes (stored.go)
//
// Keys are written whole (certmagic's Store replaces a value at once; the
// file_system storage writes a temporary file and renames it), so a reader
// sees an old or a new record, never half of one.
const jobsPrefix = "processing/jobs"

func jobKey(id string) string       { return path.Join(jobsPrefix, id) }
func jobStatusKey(id string) string { return path.Join(jobsPrefix, id, "status.json") }
func jobResultKey(id string) string { return path.Join(jobsPrefix, id, "result") }
func jobBodyKey(id string) string   { return path.Join(jobsPrefix, id, "body") }

// Job states, the values of Microsoft's REST API guidelines for
// long-running operations.
const (
	statusRunning   = "running"
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
	statusCanceled  = "canceled"
)

// reasonLost is what a job reports when its instance stopped refreshing it.
const reasonLost = "instance lost"

// reasonHandlerError starts the reason of a job whose handlers returned an
// error and wrote nothing.
const reasonHandlerError = "handler error:"

// jobRecord is a job's stored state. Only the fields of publicStatus are
// ever shown to a client: Auth in particular stays in storage.
type jobRecord struct {
	ID      string    `json:"id"`
	Status  string    `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Ended   time.Time `json:"ended,omitzero"`
	// Refresh is the running instance's refresh period, so that any
	// instance can tell when the job was lost.
	Refresh time.Duration `json:"refresh"`
	// Keep is how long the job stays after it ended.
	Keep time.Duration `json:"keep"`
	// Auth is the hex SHA-256 of the id, the submitter's Authorization and
	// its bind values, empty when it had none (see bindingHash).
	Auth       string `json:"auth,omitempty"`
	ResultSize int64  `json:"result_size,omitempty"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	// Progress is the latest valid Progress field value a handler sent on
	// a 1xx (draft-wright-http-progress), as of the last write.
	Progress string `json:"progress,omitempty"`
}

// lostAt is when a running job counts as lost.
func (rec jobRecord) lostAt() time.Time {
	return rec.Updated.Add(3 * rec.Refresh)
}

// publicStatus is the JSON body of the 202 and of the status monitor.
type publicStatus struct {
	ID      string  `json:"id"`
	Status  string  `json:"status"`
	Reason  string  `json:"reason,omitempty"`
	Created string  `json:"created"`
	Updated string  `json:"updated"`
	Elapsed float64 `json:"elapsed"` // seconds
	// Progress is the Progress field value as a handler sent it.
	Progress string `json:"progress,omitempty"`
}

func (rec jobRecord) public(now time.Time) publicStatus {
	end := now
	if !rec.Ended.IsZero() {
		end = rec.Ended
	}
	return publicStatus{
		ID:       rec.ID,
		Status:   rec.Status,
		Reason:   rec.Reason,
		Created:  rec.Created.UTC().Format(time.RFC3339Nano),
		Updated:  rec.Updated.UTC().Format(time.RFC3339Nano),
		Elapsed:  end.Sub(rec.Created).Round(time.Millisecond).Seconds(),
		Progress: rec.Progress,
	}
}

// errNoRecord: no job record under that id.
var errNoRecord = errors.New("no such job")

func loadJobRecord(ctx context.Context, storage certmagic.Storage, id string) (jobRecord, error) {
	var rec jobRecord
	b, err := storage.Load(ctx, jobStatusKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, errNoRecord
	}
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("job record %s: %w", id, err)
	}
	if rec.ID != id {
		return rec, fmt.Errorf("job record %s holds id %q", id, rec.ID)
	}
	return rec, nil
}

func storeJobRecord(ctx context.Context, storage certmagic.Storage, rec jobRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return storage.Store(ctx, jobStatusKey(rec.ID), b)
}

// listJobIDs lists the job folders; anything that is not a well-formed id
// is left alone.
func listJobIDs(ctx context.Context, storage certmagic.Storage) ([]string, error) {
	keys, err := storage.List(ctx, jobsPrefix, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		if id := path.Base(k); validJobID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// hopByHop are the fields that describe one connection, not the response
// (RFC 9110 §7.6.1), and the framing that the monitor's own response sets.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade", "Trailer",
	"Proxy-Authenticate", "Content-Length",
}

// endToEnd is a copy of h without hop-by-hop fields, nor the fields that
// Connection names.
func endToEnd(h http.Header) http.Header {
	out := h.Clone()
	if out == nil {
		out = make(http.Header)
	}
	for _, v := range out["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out.Del(f)
			}
		}
	}
	for _, f := range hopByHop {
		out.Del(f)
	}
	return out
}
