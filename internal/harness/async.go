package harness

// Clients for async mode: submit with Prefer: respond-async, poll the
// monitor, fetch the result, and look into the storage folder, as a user's
// client and an operator would.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	dto "github.com/prometheus/client_model/go"
)

// AsyncGlobal is the global options of an async test, with a storage
// folder the test can look into, and extra lines.
func AsyncGlobal(dir, extra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	local_certs
	storage file_system %s
	log {
		level ERROR
	}
	%s
}
`, dir, extra)
}

// AsyncSite is a site with async mode (the given lines of its async block)
// in front of the behaviour name.
func AsyncSite(name, asyncLines string) string {
	return fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	processing {
		async {
			%s
		}
	}
	test_work %s
}
`, asyncLines, name)
}

// StartAsync runs Caddy with an async site and returns its base URL and
// the storage folder.
func StartAsync(t *testing.T, name, asyncLines string) (base, dir string) {
	t.Helper()
	dir = StorageDir(t)
	port, _ := StartCaddyGlobal(t, AsyncGlobal(dir, ""), AsyncSite(name, asyncLines))
	return fmt.Sprintf("http://127.0.0.1:%d", port), dir
}

// AsyncClient follows no redirect: the tests look at every 303.
func AsyncClient() *http.Client {
	c := H1Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

// AsyncResp is a whole response.
type AsyncResp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JobStatus is the monitor's JSON body for a job.
type JobStatus struct {
	ID      string  `json:"id"`
	Status  string  `json:"status"`
	Reason  string  `json:"reason,omitempty"`
	Created string  `json:"created"`
	Updated string  `json:"updated"`
	Elapsed float64 `json:"elapsed"`
	// Progress is the latest Progress a job's handlers reported
	// (draft-wright-http-progress).
	Progress string `json:"progress,omitempty"`
}

// JSON decodes the body as a job's status.
func (r AsyncResp) JSON(t testing.TB) JobStatus {
	t.Helper()
	var s JobStatus
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("status body %q: %v", r.Body, err)
	}
	return s
}

// AsyncDo sends one request, with header given as name, value pairs, and
// reads the whole response.
func AsyncDo(t testing.TB, method, url string, body []byte, header ...string) AsyncResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(WithTimeout(t, 30*time.Second), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := AsyncClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return AsyncResp{res.StatusCode, res.Header, b}
}

// SubmitAsync sends a request asking for respond-async and expects a 202.
func SubmitAsync(t testing.TB, base, method, path string, body []byte, header ...string) (location string, res AsyncResp) {
	t.Helper()
	res = AsyncDo(t, method, base+path, body, append([]string{"Prefer", "respond-async"}, header...)...)
	if res.Status != http.StatusAccepted {
		t.Fatalf("submit: got %d %q, want 202", res.Status, res.Body)
	}
	return res.Header.Get("Location"), res
}

// PollUntilDone polls the monitor until it stops answering 200 running.
func PollUntilDone(t testing.TB, base, location string, header ...string) AsyncResp {
	t.Helper()
	var last AsyncResp
	Eventually(t, "the job to end", func() bool {
		last = AsyncDo(t, "GET", base+location, nil, header...)
		return last.Status != http.StatusOK || last.JSON(t).Status != "running"
	})
	return last
}

// ResultOf polls the job at location until it is done and fetches its
// result, failing the test unless the monitor redirects to it.
func ResultOf(t testing.TB, base, location string, header ...string) AsyncResp {
	t.Helper()
	done := PollUntilDone(t, base, location, header...)
	if done.Status != http.StatusSeeOther || done.Header.Get("Location") != location+"/result" {
		t.Fatalf("monitor when done: %d Location %q, want 303 to %s/result (%s)", done.Status, done.Header.Get("Location"), location, done.Body)
	}
	return AsyncDo(t, "GET", base+location+"/result", nil, header...)
}

// BlockUntil is a behaviour that waits for release (or its context) and
// answers "released".
func BlockUntil(release <-chan struct{}) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, err := io.WriteString(w, "released")
		return err
	}
}

// JobFolders lists the job folders in a storage folder.
func JobFolders(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "processing", "jobs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// IDOf is the job id at the end of a monitor location.
func IDOf(location string) string {
	return location[strings.LastIndexByte(location, '/')+1:]
}

// CounterValue is the value of the counter name with the given label
// values (name, value pairs), as the running config's metrics registry
// (the one Caddy's `metrics` handler serves) holds it; 0 if it has none.
func CounterValue(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	ctx := caddy.ActiveContext()
	families, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	return sumCounter(families, name, labels)
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
