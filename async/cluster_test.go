package async_test

// Two real Caddy processes sharing one file_system storage folder: either
// answers for the other's jobs, and a job whose instance is killed is
// reported lost within the stated bound (four refresh periods).

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/async"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// demoBuild is the demo binary, built once per test binary run into
// demoDir, which TestMain removes.
var (
	demoOnce sync.Once
	demoDir  string
	demoBin  string
	demoErr  error
)

// buildDemo builds internal/demo, a Caddy with this module and a slow
// upstream, once per test binary run.
func buildDemo(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a Caddy binary; skipped with -short")
	}
	demoOnce.Do(func() {
		demoDir, demoErr = os.MkdirTemp("", "caddy-processing-demo-")
		if demoErr != nil {
			return
		}
		demoBin = filepath.Join(demoDir, "caddy")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", demoBin, "github.com/c055b0d7/caddy-processing/internal/demo")
		if out, err := cmd.CombinedOutput(); err != nil {
			demoErr = fmt.Errorf("building the demo: %v\n%s", err, out)
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return demoBin
}

// clusterNode is one Caddy process.
type clusterNode struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

// startClusterNode runs the demo binary with async in front of its slow
// upstream, sharing the storage folder dir.
func startClusterNode(t *testing.T, bin, dir string, refresh time.Duration) *clusterNode {
	t.Helper()
	return startNode(t, bin, dir, fmt.Sprintf("wait 200ms\n\t\t\trefresh %s", refresh), "")
}

// startNode runs the demo binary with the given lines in its async block,
// in front of upstream (host:port), or of the demo's own slow upstream if
// upstream is "", sharing the storage folder dir.
func startNode(t *testing.T, bin, dir, asyncLines, upstream string) *clusterNode {
	t.Helper()
	port, demoUpstream := harness.FreePort(t), harness.FreePort(t)
	if upstream == "" {
		upstream = fmt.Sprintf("127.0.0.1:%d", demoUpstream)
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	processing {
		async {
			%s
		}
	}
	reverse_proxy %s
}
`, dir, port, asyncLines, upstream)
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(cfg, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), fmt.Sprintf("DEMO_UPSTREAM=127.0.0.1:%d", demoUpstream), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &clusterNode{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("caddy on %s logged:\n%s", n.base, logs.String())
		}
	})
	harness.Eventually(t, "caddy on "+n.base, func() bool {
		for _, p := range []int{port, demoUpstream} {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	return n
}

func TestAsyncCluster(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	const refresh = 500 * time.Millisecond
	a := startClusterNode(t, bin, dir, refresh)
	b := startClusterNode(t, bin, dir, refresh)

	// Submitted to A, polled on B, the result fetched from B.
	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/slow?seconds=1", nil)
	if st := harness.AsyncDo(t, "GET", b.base+loc, nil); st.Status != 200 || st.JSON(t).Status != async.StatusRunning {
		t.Errorf("B while A runs the job: %d %s", st.Status, st.Body)
	}
	res := harness.ResultOf(t, b.base, loc)
	if res.Status != 200 || string(res.Body) != "done after 1 seconds\n" {
		t.Errorf("result from B: %d %q", res.Status, res.Body)
	}

	// A DELETE on B of a job running on A: gone at once everywhere.
	loc2, _ := harness.SubmitAsync(t, a.base, "GET", "/slow?seconds=60", nil)
	if res := harness.AsyncDo(t, "DELETE", b.base+loc2, nil); res.Status != 204 {
		t.Errorf("DELETE on B: %d", res.Status)
	}
	for _, n := range []*clusterNode{a, b} {
		if res := harness.AsyncDo(t, "GET", n.base+loc2, nil); res.Status != 404 {
			t.Errorf("after DELETE on B, %s: %d", n.base, res.Status)
		}
	}
	// A picks up the marker at its next refresh, cancels, and removes the
	// job's folder.
	harness.Eventually(t, "A to remove the deleted job", func() bool {
		_, err := os.Stat(filepath.Join(dir, "processing", "jobs", idOf(t, loc2)))
		return os.IsNotExist(err)
	})

	// A killed during a job: B reports it lost within four refresh periods.
	loc3, _ := harness.SubmitAsync(t, a.base, "GET", "/slow?seconds=60", nil)
	time.Sleep(2 * refresh) // a refresh or two happen
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	killed := time.Now()
	var lostAfter time.Duration
	harness.Eventually(t, "B to report the job lost", func() bool {
		st := harness.AsyncDo(t, "GET", b.base+loc3, nil)
		if st.Status != 200 {
			t.Fatalf("B: %d %s", st.Status, st.Body)
		}
		s := st.JSON(t)
		if s.Status == async.StatusRunning {
			return false
		}
		if s.Status != async.StatusFailed || s.Reason != async.ReasonLost {
			t.Fatalf("B reports %+v", s)
		}
		lostAfter = time.Since(killed)
		return true
	})
	// Bound: 4 periods (2s) after the kill, plus the polling and a
	// loaded machine's slack.
	if lostAfter > 4*refresh+time.Second {
		t.Errorf("reported lost %v after the kill; the bound is %v", lostAfter, 4*refresh)
	}
	if lostAfter < 2*refresh {
		t.Errorf("reported lost %v after the kill, before three periods could pass since the last refresh", lostAfter)
	}
	t.Logf("lost reported %v after SIGKILL (refresh %v)", lostAfter, refresh)
}
