// Command idlecpu measures the CPU a Caddy process spends while requests
// wait behind `processing` with no 102 due: a scheduler that sleeps until
// its next due tick costs next to nothing then.
//
// It starts an upstream that holds every request, runs Caddy (this module
// and Caddy's standard modules, loaded from a Caddyfile) in a child
// process of its own, opens -n HTTP/1.1 requests through it, waits until
// the upstream holds them all, and reads the child's CPU time
// (utime+stime in /proc/<pid>/stat, and the per-thread run time in
// /proc/<pid>/task/*/schedstat, in nanoseconds) before and after -window.
// The window must end before the first 102 is due (-interval).
//
//	cd interop && go run ./idlecpu -n 1 -window 15s
//	cd interop && go run ./idlecpu -n 1000 -window 12s
//	cd interop && go run ./idlecpu -n 1000 -window 12s -bare   # Caddy without the module
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/c055b0d7/caddy-processing"
)

// serveEnv names the Caddyfile the child process runs.
const serveEnv = "IDLECPU_CADDYFILE"

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (proc(5)); 100 on every Linux architecture Go supports.
const clockTicks = 100

func main() {
	if path := os.Getenv(serveEnv); path != "" {
		serve(path)
		return
	}
	n := flag.Int("n", 1, "requests waiting")
	window := flag.Duration("window", 15*time.Second, "how long to measure")
	interval := flag.Duration("interval", 20*time.Second, "the processing interval (the first 102 is due after it)")
	bare := flag.Bool("bare", false, "the same route without processing")
	flag.Parse()
	if err := measure(*n, *window, *interval, *bare); err != nil {
		fmt.Fprintln(os.Stderr, "idlecpu:", err)
		os.Exit(1)
	}
}

// serve runs Caddy from the Caddyfile at path until the process is killed.
func serve(path string) {
	src, err := os.ReadFile(path)
	if err == nil {
		var cfg []byte
		cfg, _, err = caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": path})
		if err == nil {
			err = caddy.Load(cfg, true)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlecpu serve:", err)
		os.Exit(1)
	}
	select {}
}

func measure(n int, window, interval time.Duration, bare bool) error {
	// The upstream holds every request until this process exits.
	var held atomic.Int64
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		_ = http.Serve(upstream, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			held.Add(1)
			<-r.Context().Done()
		}))
	}()

	port, err := freePort()
	if err != nil {
		return err
	}
	directive := fmt.Sprintf("processing %s", interval)
	if bare {
		directive = ""
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}
http://127.0.0.1:%d {
	%s
	reverse_proxy %s
}
`, port, directive, upstream.Addr())
	dir, err := os.MkdirTemp("", "idlecpu")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.Command(self)
	child.Env = append(os.Environ(), serveEnv+"="+path, "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	child.Stderr = io.Discard
	if err := child.Start(); err != nil {
		return err
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("caddy did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	first := time.Now()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var got102 atomic.Int64
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("request %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "GET /wait/%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, addr); err != nil {
			return err
		}
		go func() {
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if strings.HasPrefix(line, "HTTP/1.1 102") {
					got102.Add(1)
				}
			}
		}()
	}
	for held.Load() < int64(n) {
		if time.Since(first) > interval/2 {
			return fmt.Errorf("only %d of %d requests reached the upstream", held.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the arrivals' work (and a GC) settle
	pid := child.Process.Pid
	t0, s0, err := cpuOf(pid)
	if err != nil {
		return err
	}
	time.Sleep(window)
	t1, s1, err := cpuOf(pid)
	if err != nil {
		return err
	}
	if since := time.Since(first); since >= interval && !bare {
		return fmt.Errorf("the window ended %v after the first request, after its 102 was due (%v)", since, interval)
	}
	mode := "with processing " + interval.String()
	if bare {
		mode = "without processing"
	}
	fmt.Printf("%d waiting requests, %s, over %v: utime+stime %v, threads' run time %v, 102s received %d\n",
		n, mode, window, t1-t0, (s1 - s0).Round(10*time.Microsecond), got102.Load())
	return nil
}

// cpuOf returns pid's utime+stime from /proc/<pid>/stat, and the sum of
// its threads' run times from /proc/<pid>/task/*/schedstat (ns; threads
// that exited are not counted, and Go's rarely exit).
func cpuOf(pid int) (ticks, sched time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14 and stime 15 (proc(5)).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parsing %q", b)
	}
	ticks = time.Duration(utime+stime) * time.Second / clockTicks
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		ns, err := strconv.ParseInt(strings.Fields(string(b))[0], 10, 64)
		if err == nil {
			sched += time.Duration(ns)
		}
	}
	return ticks, sched, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
