package async

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminJobs{})
}

// adminJobs is the admin API module `admin.api.processing`: GET
// /processing/jobs lists the async jobs running in this Caddy process,
// oldest first, as a JSON array of {id, method, path, elapsed (seconds)}.
// It lists ids, which the site never does: the admin endpoint is for the
// operator only.
type adminJobs struct{}

// CaddyModule returns the Caddy module information.
func (adminJobs) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.processing",
		New: func() caddy.Module { return new(adminJobs) },
	}
}

// Routes returns the admin routes.
func (adminJobs) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/processing/jobs", Handler: caddy.AdminHandlerFunc(listRunningJobs)}}
}

// runningJob is one entry of the admin listing.
type runningJob struct {
	ID      string  `json:"id"`
	Method  string  `json:"method"`
	Path    string  `json:"path"`
	Elapsed float64 `json:"elapsed"`
}

func listRunningJobs(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errMethodNotAllowed}
	}
	now := time.Now()
	out := []runningJob{}
	for _, j := range registry.snapshot() {
		out = append(out, runningJob{
			ID: j.id, Method: j.method, Path: j.path,
			Elapsed: now.Sub(j.created).Round(time.Millisecond).Seconds(),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

type adminError string

func (e adminError) Error() string { return string(e) }

const errMethodNotAllowed = adminError("method not allowed: use GET")

var _ caddy.AdminRouter = adminJobs{}
