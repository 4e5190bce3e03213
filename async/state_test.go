package async_test

// The job state machine across real Caddy processes sharing one
// file_system storage (state.go): a DELETE inside the job's finish, an
// instance paused past three refreshes, a storage that fails mid-job, and
// max_stored counted for the whole cluster.

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/async"
	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// gate is an upstream the test controls. A request to /gate reports its
// arrival, then waits for release (and answers "released", reporting
// answered) or for its own cancellation (reporting canceled). A request
// to /bytes?n=N answers N bytes after 300 ms, with no Date, so that every
// such result has the same size.
type gate struct {
	srv      *httptest.Server
	arrived  chan struct{}
	answered chan struct{}
	canceled chan struct{}
	release  chan struct{}
	closed   chan struct{}
}

func newGate(t *testing.T) *gate {
	t.Helper()
	g := &gate{
		arrived: make(chan struct{}, 16), answered: make(chan struct{}, 16), canceled: make(chan struct{}, 16),
		release: make(chan struct{}), closed: make(chan struct{}),
	}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bytes" {
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			time.Sleep(300 * time.Millisecond)
			w.Header()["Date"] = nil
			w.Write(bytes.Repeat([]byte("x"), n))
			return
		}
		g.arrived <- struct{}{}
		select {
		case <-g.release:
			io.WriteString(w, "released")
			g.answered <- struct{}{}
		case <-r.Context().Done():
			g.canceled <- struct{}{}
		case <-g.closed:
		}
	}))
	t.Cleanup(func() {
		close(g.closed)
		g.srv.Close()
	})
	return g
}

func (g *gate) addr() string { return strings.TrimPrefix(g.srv.URL, "http://") }

// waitFor waits for a report of the gate, generously.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestAsyncDeleteInsideFinishNeverServes: a DELETE on B while A's job is
// about to finish. A's refresh is far longer than the test, so A learns of
// the DELETE only when it commits, under the job's lock: it must store
// nothing, and neither instance ever serves the result.
func TestAsyncDeleteInsideFinishNeverServes(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	g := newGate(t)
	lines := "wait 100ms\n\t\t\trefresh 1m"
	a := startNode(t, bin, dir, lines, g.addr())
	b := startNode(t, bin, dir, lines, g.addr())

	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/gate", nil)
	waitFor(t, g.arrived, "the job's request upstream")
	if res := harness.AsyncDo(t, "DELETE", b.base+loc, nil); res.Status != http.StatusNoContent {
		t.Fatalf("DELETE on B: %d %s", res.Status, res.Body)
	}
	close(g.release)
	waitFor(t, g.answered, "the upstream to answer A's job")
	// A's job returns and commits within milliseconds; watch both
	// instances well past that.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		for _, n := range []*clusterNode{a, b} {
			for _, p := range []string{loc, loc + "/result"} {
				if res := harness.AsyncDo(t, "GET", n.base+p, nil); res.Status != http.StatusNotFound {
					t.Fatalf("GET %s on %s after DELETE answered 204: %d %s", p, n.base, res.Status, res.Body)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "processing", "jobs", idOf(t, loc))); !os.IsNotExist(err) {
		t.Errorf("the deleted job's folder is still in storage: %v", err)
	}
}

// TestAsyncPausedInstanceStaysLost: A is stopped (SIGSTOP) until B has
// declared its job lost; once A runs again, its next refresh finds the job
// ended, cancels the handlers' context, and stores nothing: the job stays
// failed, "instance lost".
func TestAsyncPausedInstanceStaysLost(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	g := newGate(t)
	const refresh = 500 * time.Millisecond
	lines := "wait 100ms\n\t\t\trefresh " + refresh.String()
	a := startNode(t, bin, dir, lines, g.addr())
	b := startNode(t, bin, dir, lines, g.addr())

	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/gate", nil)
	waitFor(t, g.arrived, "the job's request upstream")
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = a.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	harness.Eventually(t, "B to declare the job lost", func() bool {
		st := harness.AsyncDo(t, "GET", b.base+loc, nil).JSON(t)
		if st.Status == async.StatusRunning {
			return false
		}
		if st.Status != async.StatusFailed || st.Reason != async.ReasonLost {
			t.Fatalf("B reports %+v while A is stopped", st)
		}
		return true
	})
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	waitFor(t, g.canceled, "A to cancel the job's handlers after it resumed")
	// Let A's handlers return and its job finish, then look.
	for end := time.Now().Add(4 * refresh); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, n := range []*clusterNode{a, b} {
			res := harness.AsyncDo(t, "GET", n.base+loc, nil)
			if st := res.JSON(t); res.Status != 200 || st.Status != async.StatusFailed || st.Reason != async.ReasonLost {
				t.Fatalf("%s after A resumed: %d %+v", n.base, res.Status, st)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "processing", "jobs", idOf(t, loc), "result")); !os.IsNotExist(err) {
		t.Errorf("a result was stored for the lost job: %v", err)
	}
}

// TestAsyncStorageFailureReportedByRunningInstance: the job's folder is
// replaced by a file mid-job (the tests run as root, which a read-only
// folder would not stop). A's next refresh fails: it cancels the handlers
// with the storage's error and keeps trying to record it; B answers 500
// meanwhile, not "instance lost"; once the folder is back, the job reads
// failed with the storage's error.
func TestAsyncStorageFailureReportedByRunningInstance(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	g := newGate(t)
	lines := "wait 100ms\n\t\t\trefresh 2s"
	a := startNode(t, bin, dir, lines, g.addr())
	b := startNode(t, bin, dir, lines, g.addr())

	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/gate", nil)
	waitFor(t, g.arrived, "the job's request upstream")
	jobDir := filepath.Join(dir, "processing", "jobs", idOf(t, loc))
	if err := os.Rename(jobDir, jobDir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jobDir, []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, g.canceled, "A to cancel the job for the storage failure")
	if res := harness.AsyncDo(t, "GET", b.base+loc, nil); res.Status != http.StatusInternalServerError {
		t.Errorf("B while the job's record cannot be read: %d %s", res.Status, res.Body)
	}
	if err := os.Remove(jobDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(jobDir+".away", jobDir); err != nil {
		t.Fatal(err)
	}
	final := harness.PollUntilDone(t, b.base, loc)
	st := final.JSON(t)
	if final.Status != 200 || st.Status != async.StatusFailed || !strings.HasPrefix(st.Reason, "storage: ") || !strings.Contains(st.Reason, "not a directory") {
		t.Errorf("after the storage came back, B reports %d %+v; want failed with the storage's error", final.Status, st)
	}
}

// TestAsyncMaxStoredAcrossInstances: max_stored counts every instance's
// results: a result stored by A makes B refuse too, and B's DELETE of it
// makes room for A.
func TestAsyncMaxStoredAcrossInstances(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	g := newGate(t)
	// A 10000-byte result leaves less than one max_result under max_stored.
	lines := "wait 100ms\n\t\t\tmax_result 12000\n\t\t\tmax_stored 20000"
	a := startNode(t, bin, dir, lines, g.addr())
	b := startNode(t, bin, dir, lines, g.addr())

	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/bytes?n=10000", nil)
	if res := harness.ResultOf(t, b.base, loc); res.Status != 200 || len(res.Body) != 10000 {
		t.Fatalf("first result: %d, %d bytes", res.Status, len(res.Body))
	}
	for _, n := range []*clusterNode{a, b} {
		if res := harness.AsyncDo(t, "GET", n.base+"/bytes?n=10", nil, "Prefer", "respond-async"); res.Status != http.StatusServiceUnavailable {
			t.Errorf("%s with 10000 of 20000 bytes stored and max_result 12000: %d, want 503", n.base, res.Status)
		}
	}
	if res := harness.AsyncDo(t, "DELETE", b.base+loc, nil); res.Status != http.StatusNoContent {
		t.Fatalf("DELETE on B: %d", res.Status)
	}
	loc2, _ := harness.SubmitAsync(t, a.base, "GET", "/bytes?n=10000", nil)
	if res := harness.ResultOf(t, a.base, loc2); res.Status != 200 || len(res.Body) != 10000 {
		t.Errorf("result after B's DELETE made room: %d, %d bytes", res.Status, len(res.Body))
	}
}
