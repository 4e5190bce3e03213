package interop

// Progress end to end with real clients (async/progress.go, async/sse.go):
// curl following the monitor's event stream, Python resuming from the
// Location of the first 102 after its connection broke, and Chromium's
// EventSource.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// progressJob is a behaviour that reports Progress on a 102 of its own at
// each step and waits for the test before the next; then it answers 201.
type progressJob struct {
	steps   []string
	release chan struct{}
}

func newProgressJob(steps ...string) *progressJob {
	return &progressJob{steps: steps, release: make(chan struct{}, len(steps))}
}

func (p *progressJob) serve(w http.ResponseWriter, r *http.Request) error {
	if r.URL.Path != "/convert" {
		// Such as the browser's /favicon.ico, which must not take a step.
		w.WriteHeader(http.StatusNotFound)
		return nil
	}
	body, _ := io.ReadAll(r.Body)
	for _, s := range p.steps {
		w.Header().Set("Progress", s)
		w.WriteHeader(http.StatusProcessing)
		select {
		case <-p.release:
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	w.Header().Del("Progress")
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusCreated)
	_, err := fmt.Fprintf(w, "done: %s", body)
	return err
}

// progressSite runs the job behind processing with async mode, and a page
// for the browser at /page.
func progressSite(t *testing.T, job *progressJob) (base string, port int) {
	t.Helper()
	name := fmt.Sprintf("progress_%p", job)
	harness.SetBehaviour(t, name, job.serve)
	dir := harness.StorageDir(t)
	port, _ = harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	respond /page "<!doctype html><title>progress</title>" {
		close
	}
	processing {
		interval 200ms
		async {
			wait 200ms
			refresh 200ms
		}
	}
	test_work %s
}
`, name))
	return fmt.Sprintf("http://127.0.0.1:%d", port), port
}

// streamLines starts cmd and returns its standard output line by line.
func streamLines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	stdout, stdoutW := io.Pipe()
	cmd.Stdout = stdoutW
	var stderr strings.Builder
	cmd.Stderr = &stderr
	startGroup(t, cmd, func(err error) {
		if err != nil {
			t.Logf("%s: %v\n%s", filepath.Base(cmd.Path), err, stderr.String())
		}
		stdoutW.Close()
	})
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

func nextLine(t *testing.T, lines <-chan string, what string) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-lines:
		return l, ok
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return "", false
	}
}

// jobStatus is the monitor's JSON.
type jobStatus struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Progress string `json:"progress"`
}

// TestProgressCurlEventStream: `curl -N` with Accept: text/event-stream
// shows an event at each step and the terminal status last, then curl ends
// because the stream does.
func TestProgressCurlEventStream(t *testing.T) {
	clNeedPrograms(t, "curl")
	job := newProgressJob("1/2", "2/2")
	base, _ := progressSite(t, job)
	loc, _ := harness.SubmitAsync(t, base, "POST", "/convert", []byte("curl"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lines := streamLines(t, exec.CommandContext(ctx, "curl", "-sS", "-N", "-H", "Accept: text/event-stream", base+loc))
	var got []jobStatus
	keepAlive, pending := 0, false
	for {
		l, ok := nextLine(t, lines, "event from curl")
		if !ok {
			break
		}
		if l == ": keep-alive" {
			keepAlive++
			// Each step is released after a keep-alive comment, so
			// that the stream shows one between events.
			if pending {
				pending = false
				job.release <- struct{}{}
			}
		}
		data, isData := strings.CutPrefix(l, "data: ")
		if !isData {
			continue
		}
		var st jobStatus
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			t.Fatalf("curl printed %q: %v", l, err)
		}
		got = append(got, st)
		pending = st.Status == "running" && st.Progress != ""
	}
	if len(got) < 3 || got[len(got)-1].Status != "succeeded" || got[len(got)-2].Progress != "2/2" {
		t.Errorf("curl saw %+v", got)
	}
	if keepAlive < 2 {
		t.Errorf("%d keep-alive comments", keepAlive)
	}
}

// progressPython reads the first 102 with http.client, which takes it for
// the final response, and closes: the connection is broken while the job
// runs. It prints the 102's status and Location, then fetches the result
// from that Location with requests, which follows the monitor's 303.
const progressPython = `
import http.client, sys, time, requests
host, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection(host, port, timeout=30)
conn.request("POST", "/convert", body=b"python", headers={"Prefer": "processing"})
first = conn.getresponse()
location = first.getheader("Location")
print(first.status, location, first.getheader("Progress"), flush=True)
conn.close()
base = "http://%s:%d" % (host, port)
while True:
    r = requests.get(base + location, timeout=30)
    if r.url == base + location and r.json()["status"] == "running":
        time.sleep(float(r.headers.get("Retry-After", "1")) / 5)
        continue
    break
print(r.status_code, r.text, flush=True)
`

// TestProgressPythonResumesFromLocation: Python reads the first 102's
// Location, drops the connection, and gets the job's response from there.
func TestProgressPythonResumesFromLocation(t *testing.T) {
	python := asyncPython(t)
	job := newProgressJob("1/1")
	_, port := progressSite(t, job)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lines := streamLines(t, exec.CommandContext(ctx, python, "-c", progressPython, "127.0.0.1", fmt.Sprint(port)))
	first, _ := nextLine(t, lines, "the first 102 from python")
	f := strings.Fields(first)
	if len(f) != 3 || f[0] != "102" || !strings.HasPrefix(f[1], "/.well-known/processing/jobs/") || f[2] != "1/1" {
		t.Fatalf("python's first response: %q, want 102, a Location and Progress 1/1", first)
	}
	job.release <- struct{}{}
	last, _ := nextLine(t, lines, "the result from python")
	if last != "201 done: python" {
		t.Errorf("python printed %q, want %q", last, "201 done: python")
	}
	if more, ok := nextLine(t, lines, "python's end"); ok {
		t.Errorf("python printed more: %q", more)
	}
}

// TestProgressChromiumEventSource: a page's EventSource gets the job's
// status at each change and the terminal one, then closes.
func TestProgressChromiumEventSource(t *testing.T) {
	clNeedPrograms(t, "chromium", "node")
	dir, err := filepath.Abs("testdata/browsers")
	if err != nil {
		t.Fatal(err)
	}
	browserNeedDriver(t, dir)
	exe, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	job := newProgressJob("1/2", "2/2")
	base, _ := progressSite(t, job)
	loc, _ := harness.SubmitAsync(t, base, "POST", "/convert", []byte("browser"))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, "node", "eventsource.js", exe, base+"/page", loc, filepath.Join(home, "profile"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home)
	lines := streamLines(t, cmd)
	var got []jobStatus
	done := false
	for !done {
		l, ok := nextLine(t, lines, "a line from eventsource.js")
		if !ok {
			break
		}
		var line struct {
			Version, Fatal, Error string
			Done                  bool
			Data                  *jobStatus
		}
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("eventsource.js printed %q: %v", l, err)
		}
		switch {
		case line.Fatal != "" || line.Error != "":
			t.Fatalf("eventsource.js: %s%s", line.Fatal, line.Error)
		case line.Version != "":
			t.Logf("browser %s", line.Version)
		case line.Done:
			done = true
		case line.Data != nil:
			got = append(got, *line.Data)
			if line.Data.Status == "running" && line.Data.Progress != "" {
				job.release <- struct{}{}
			}
		}
	}
	if !done || len(got) < 3 || got[len(got)-1].Status != "succeeded" || got[len(got)-2].Progress != "2/2" {
		t.Errorf("the page saw %+v (done %v)", got, done)
	}
	for {
		if _, ok := nextLine(t, lines, "eventsource.js's end"); !ok {
			break // the browser closed and node exited
		}
	}
}
