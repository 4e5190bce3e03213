package interop

// The browser part of the compatibility suite: Debian's Chromium and
// Firefox ESR, headless, driven by puppeteer-core (testdata/browsers),
// load pages from the suite's Caddy over HTTP/1.1 and HTTP/2 and ask for
// slow resources behind processing from script, by navigation and by a
// form. It records what the page sees and whether a 102 ever shows.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// browserKind is one browser and how puppeteer-core drives it.
type browserKind struct {
	name    string // as in the table
	program string // Debian's binary
	driver  string // browser.js's first argument
}

func browserKinds() []browserKind {
	return []browserKind{
		{name: "Chromium (puppeteer-core, CDP)", program: "chromium", driver: "chrome"},
		{name: "Firefox ESR (puppeteer-core, WebDriver BiDi)", program: "firefox-esr", driver: "firefox"},
	}
}

// browserTask is what a page did for one slow request, as browser.js
// reports it.
type browserTask struct {
	Task          string
	Status        int
	Body          string
	Error         string
	Ms            float64
	Statuses      []string // XHR: event:readyState:status at every event
	ConsoleErrors []string
	// Timing is the request's Resource Timing entry (fetch, XHR,
	// navigation); Control, fetch's, is that of a fast request.
	Timing, Control *browserTiming

	wire, sent int // 102s on the browser's connections (HTTP/1.1), and sent by Caddy
}

// browserTiming is what a page reads in a Resource Timing entry.
type browserTiming struct {
	Protocol       string
	ResponseStatus *int
	// FirstInterimResponseStart is when the first 1xx arrived, 0 when
	// none did; the only trace of a 102 that a page can read.
	FirstInterimResponseStart *float64
}

// browserWant is the answer each task must end with: the slow upstream's
// body, the form's fields echoed after it, a multistatus for PROPFIND.
func browserWant(task string) (status int, body string) {
	switch task {
	case "form":
		return 200, clUpstreamBody + "posted note=posted+from+a+form\n"
	case "propfind":
		return 207, clMultistatus
	}
	return 200, clUpstreamBody
}

// browserNeedDriver skips (or in CI fails) when puppeteer-core is not
// installed in testdata/browsers.
func browserNeedDriver(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "puppeteer-core")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("puppeteer-core is not installed (CI runs .ci/install-browsers.sh): %v", err)
		}
		t.Skip("puppeteer-core is not installed; run .ci/install-browsers.sh (see docs/clients.md)")
	}
}

// runBrowserCase runs browser.js for one browser over one protocol,
// checks each task and returns the row.
func runBrowserCase(t *testing.T, e *clEnv, b browserKind, h2 bool) clRow {
	clNeedPrograms(t, b.program, "node")
	dir, err := filepath.Abs("testdata/browsers")
	if err != nil {
		t.Fatal(err)
	}
	browserNeedDriver(t, dir)
	exe, err := exec.LookPath(b.program)
	if err != nil {
		t.Fatal(err)
	}
	proto, origin, wantProto := "HTTP/1.1", "http://"+e.relay.addr(), "http/1.1"
	if h2 {
		proto, origin, wantProto = "HTTP/2", e.tlsBase, "h2"
	}
	tag := fmt.Sprintf("%s-%d", b.driver, prRequests.Add(1))
	r := clRow{Client: b.name, Proto: proto, Version: "unknown"}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, "node", "browser.js", b.driver, exe, origin, filepath.Join(home, "profile"), tag)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Through an io.Pipe, so that the last lines are read before the
	// reading ends: an os/exec pipe is closed as soon as node exits.
	stdout, stdoutW := io.Pipe()
	cmd.Stdout = stdoutW
	stderr, err := os.Create(filepath.Join(home, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	var waitErr error
	exited := startGroup(t, cmd, func(err error) {
		waitErr = err
		stdoutW.Close()
	})

	var tasks []browserTask
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Version, Ready, Fatal string
			browserTask
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("browser.js printed %q: %v", sc.Text(), err)
		}
		switch {
		case line.Fatal != "":
			t.Fatalf("browser.js: %s\n%s", line.Fatal, browserStderr(home))
		case line.Version != "":
			r.Version = line.Version
		case line.Ready != "":
			e.relay.take()
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				t.Fatal(err)
			}
		case line.Task != "":
			task := line.browserTask
			toClient, _ := e.relay.take()
			task.wire = -1
			if !h2 {
				task.wire = clCount102(toClient)
			}
			task.sent = e.interimsSent("/plain/slow?tag=" + tag + "-" + task.Task)
			t.Logf("%s: %s (%d 102s on the wire, %d sent)", task.Task, sc.Bytes(), task.wire, task.sent)
			tasks = append(tasks, task)
		}
	}
	stdin.Close()
	<-exited
	if waitErr != nil {
		t.Errorf("browser.js: %v\n%s", waitErr, browserStderr(home))
	}
	if len(tasks) != 5 {
		t.Fatalf("browser.js ran %d of 5 tasks\n%s", len(tasks), browserStderr(home))
	}

	var sent []string
	var seen102 bool
	fastest, slowest := time.Hour, time.Duration(0)
	for _, k := range tasks {
		took := time.Duration(k.Ms * float64(time.Millisecond))
		fastest, slowest = min(fastest, took), max(slowest, took)
		wantStatus, wantBody := browserWant(k.Task)
		if k.Error != "" || k.Status != wantStatus || strings.TrimSpace(k.Body) != strings.TrimSpace(wantBody) {
			t.Errorf("%s: want %d with %q, got %d with %q (error %q)", k.Task, wantStatus, wantBody, k.Status, k.Body, k.Error)
		}
		if len(k.ConsoleErrors) > 0 {
			t.Errorf("%s: console errors %q", k.Task, k.ConsoleErrors)
		}
		// The page cannot have its answer before the upstream gave it.
		if took < clUpstreamDelay*9/10 {
			t.Errorf("%s: done in %.0f ms, before the upstream's %v", k.Task, k.Ms, clUpstreamDelay)
		}
		if k.sent < 3 {
			t.Errorf("%s: Caddy sent %d 102s during a %v request", k.Task, k.sent, clUpstreamDelay)
		}
		if k.wire >= 0 && k.wire != k.sent {
			t.Errorf("%s: %d 102s on the browser's connections, Caddy logged %d", k.Task, k.wire, k.sent)
		}
		for _, s := range k.Statuses {
			if strings.HasSuffix(s, ":102") {
				seen102 = true
				t.Errorf("xhr: a 102 shown to script: %q", k.Statuses)
			}
		}
		if k.Timing != nil && k.Timing.Protocol != wantProto {
			t.Errorf("%s: went over %q, want %q", k.Task, k.Timing.Protocol, wantProto)
		}
		if k.Timing != nil && k.Timing.ResponseStatus != nil && *k.Timing.ResponseStatus != wantStatus {
			t.Errorf("%s: Resource Timing's responseStatus %d", k.Task, *k.Timing.ResponseStatus)
		}
		if k.Task == "fetch" || k.Task == "xhr" || k.Task == "navigation" {
			if k.Timing == nil || k.Timing.FirstInterimResponseStart == nil || *k.Timing.FirstInterimResponseStart <= 0 {
				t.Errorf("%s: want Resource Timing's firstInterimResponseStart set, got %+v", k.Task, k.Timing)
			}
		}
		if k.Task == "fetch" && (k.Control == nil || k.Control.FirstInterimResponseStart == nil || *k.Control.FirstInterimResponseStart != 0) {
			t.Errorf("fetch of /fast: want firstInterimResponseStart 0, got %+v", k.Control)
		}
		sent = append(sent, fmt.Sprintf("%s %d", k.Task, k.sent))
	}
	r.Sees102 = fmt.Sprintf("not shown to script: a status is never 102; Resource Timing's `firstInterimResponseStart` is set (fetch, XHR, navigation; 0 without 102s). Sent: %s", strings.Join(sent, ", "))
	if seen102 {
		r.Sees102 = "**yes**: XHR showed a 102"
	}
	r.Final = fmt.Sprintf("200 + body to `fetch`, XHR, a navigation and a form POST (body received); 207 + body to a `PROPFIND` from `fetch`; "+
		"in %v to %v; no console errors", fastest.Round(100*time.Millisecond), slowest.Round(100*time.Millisecond))
	r.TimeoutReset = "n/a (no setting)"
	return r
}

// browserStderr is what browser.js and the browser wrote to standard error.
func browserStderr(home string) string {
	b, _ := os.ReadFile(filepath.Join(home, "stderr"))
	return prTail(string(b), 3000)
}

// startGroup starts cmd in a process group of its own and, when the test
// ends, stops the whole group: a driver's browser and a proxy's workers go
// with it. onExit, if not nil, gets cmd.Wait's result; the channel is
// closed after it ran.
func startGroup(t *testing.T, cmd *exec.Cmd, onExit func(error)) <-chan struct{} {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if onExit != nil {
			onExit(err)
		}
		close(done)
	}()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		// TERM lets a master stop its workers; KILL ends whatever remains.
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Logf("%s: still running 10s after SIGTERM; killing its process group", filepath.Base(cmd.Path))
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	})
	return done
}
