package async_test

// Bounded resources: the timeout, the sweep's pace, every storage swept,
// and body folders of dead processes removed at start.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/async"
	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
)

// TestAsyncTimeout: a job running longer than timeout fails with a reason
// naming it, and its handler sees its context cancelled with that cause.
func TestAsyncTimeout(t *testing.T) {
	cause := make(chan error, 1)
	harness.SetBehaviour(t, "async_timeout", func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-r.Context().Done():
			cause <- context.Cause(r.Context())
		case <-time.After(time.Minute):
			cause <- nil
		}
		return r.Context().Err()
	})
	base, _ := harness.StartAsync(t, "async_timeout", "wait 50ms\n\t\t\ttimeout 500ms")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	done := harness.PollUntilDone(t, base, loc)
	const want = "timeout: ran longer than 500ms"
	if st := done.JSON(t); done.Status != 200 || st.Status != async.StatusFailed || st.Reason != want {
		t.Errorf("monitor after the timeout: %d %+v, want failed %q", done.Status, st, want)
	}
	select {
	case err := <-cause:
		if err == nil || err.Error() != want {
			t.Errorf("handler's context cause %v, want %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never saw its context cancelled")
	}
}

func randomJobID(t *testing.T) string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	if !async.ValidJobID(id) {
		t.Fatalf("made an invalid id %q", id)
	}
	return id
}

// writeEndedJobs writes n job records that ended at ended, kept for keep,
// into a storage folder, as instances that are gone would have left them.
func writeEndedJobs(t *testing.T, dir string, n int, ended time.Time, keep time.Duration) {
	t.Helper()
	for range n {
		writeRecord(t, dir, async.JobRecord{
			ID: randomJobID(t), Status: async.StatusFailed, Reason: "handler error: 502 Bad Gateway",
			Created: ended.Add(-time.Second), Updated: ended, Ended: ended,
			Refresh: 5 * time.Second, Keep: keep, Method: "GET", Path: "/",
		})
	}
}

// writeRecord writes a job's record into a file_system storage folder, as
// an instance would have stored it.
func writeRecord(t *testing.T, dir string, rec async.JobRecord) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	folder := filepath.Join(dir, "processing", "jobs", rec.ID)
	if err := os.MkdirAll(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(folder, "status.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAsyncSweepKeepsUp: thousands of expired records are all gone within
// one sweep period plus one pass (docs/async.md), however many there are:
// no cap per pass.
func TestAsyncSweepKeepsUp(t *testing.T) {
	harness.SetBehaviour(t, "async_sweep", harness.SleepThen(100*time.Millisecond, "ok"))
	dir := harness.StorageDir(t)
	const n = 4000
	writeEndedJobs(t, dir, n, time.Now().Add(-2*time.Hour), time.Hour)
	start := time.Now()
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), harness.AsyncSite("async_sweep", "keep 1s"))
	_ = port
	// The first pass starts at once; a period is 250 ms with keep 1s. A
	// sweep capped at 64 records a pass would take 4000/64 × 250 ms, over
	// 15 s; one pass here is a List and a Load and a Delete per record.
	const bound = 8 * time.Second
	var left int
	for {
		left = len(harness.JobFolders(t, dir))
		if left == 0 || time.Since(start) > bound {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if left != 0 {
		t.Fatalf("%d of %d expired jobs left after %v", left, n, bound)
	}
	t.Logf("%d expired jobs swept in %v", n, time.Since(start).Round(time.Millisecond))
}

// TestAsyncSweepsOldConfigsStorage: after a reload to a config with
// another storage, a job that ran on under the old config is still swept
// from the old storage when its keep ran out.
func TestAsyncSweepsOldConfigsStorage(t *testing.T) {
	harness.SetBehaviour(t, "async_old_storage", harness.SleepThen(time.Second, "from the old config"))
	oldDir, newDir := harness.StorageDir(t), harness.StorageDir(t)
	port := harness.FreePort(t)
	load := func(dir string) {
		site := fmt.Sprintf(`
http://127.0.0.1:%d {
	processing {
		async {
			wait 50ms
			keep 1s
		}
	}
	test_work async_old_storage
}
`, port)
		if err := caddy.Load(harness.Adapt(t, harness.AsyncGlobal(dir, "")+site), true); err != nil {
			t.Fatal(err)
		}
	}
	load(oldDir)
	t.Cleanup(func() {
		harness.CloseClientConnections()
		_ = caddy.Stop()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	load(newDir)
	id := idOf(t, loc)
	harness.Eventually(t, "the old config's job to end", func() bool {
		b, err := os.ReadFile(filepath.Join(oldDir, "processing", "jobs", id, "status.json"))
		var rec async.JobRecord
		return err == nil && json.Unmarshal(b, &rec) == nil && rec.Status == async.StatusSucceeded
	})
	harness.Eventually(t, "the old storage to be swept", func() bool { return len(harness.JobFolders(t, oldDir)) == 0 })
}

// TestAsyncRemovesDeadBodyFolders: when async mode starts, the body folder
// of a process that is gone is removed; a live process's is kept.
func TestAsyncRemovesDeadBodyFolders(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	alive := exec.Command("sleep", "60")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = alive.Process.Kill()
		_ = alive.Wait()
	})
	folder := func(pid int) string {
		return filepath.Join(os.TempDir(), fmt.Sprintf("caddy-processing-%d", pid))
	}
	for _, pid := range []int{gone.Process.Pid, alive.Process.Pid} {
		if err := os.MkdirAll(folder(pid), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(folder(pid)) })
		if err := os.WriteFile(filepath.Join(folder(pid), "body-1"), []byte("left behind"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	harness.SetBehaviour(t, "async_bodies", harness.SleepThen(0, "ok"))
	harness.StartAsync(t, "async_bodies", "wait 50ms")
	harness.Eventually(t, "the dead process's body folder to go", func() bool {
		_, err := os.Stat(folder(gone.Process.Pid))
		return os.IsNotExist(err)
	})
	if _, err := os.Stat(filepath.Join(folder(alive.Process.Pid), "body-1")); err != nil {
		t.Errorf("a live process's body was removed: %v", err)
	}
}
