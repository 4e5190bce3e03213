// Command loadtest measures what the processing module costs a whole Caddy
// server. It runs Caddy in this process and compares each figure with the
// same Caddy whose config lacks the `processing` line, alternating the two
// in one run so that both see the same noise on a shared machine.
//
//	rps:   requests per second on the fast path, with wrk (HTTP/1.1) and
//	       h2load (HTTP/2 over h2c), with and without the module.
//	scale: N concurrent long requests held for a while with a 102 every
//	       interval, over HTTP/1.1 and h2c: completion, 102 lateness,
//	       memory per in-flight request, CPU, and CPU per 102.
//	floor: the kernel's floor for one 102 on HTTP/1.1: 27-byte writes
//	       round-robin to N idle loopback connections, one per connection
//	       per interval, for the hold time.
//	stall: whether a client that stops reading delays others' 102s: the
//	       scale load's 102 lateness, all with the
//	       module, in phases without and with clients that stop reading
//	       (stall.go). Not part of all.
//
// Run it with interop/loadtest/run.sh, which raises the file descriptor
// limit first. The client of the scale test is this same program started
// again with -client, so that the server's figures are its own.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// logf reports progress on stderr. Not the standard logger: Caddy sends
// that one into its own logs.
var logf = log.New(os.Stderr, "", log.Ltime)

func main() {
	var (
		mode       = flag.String("mode", "all", "what to run: rps, scale, floor (the kernel's floor for a 102 on HTTP/1.1), xfloor (scale against Go's own server writing its own 102s: the libraries' floor), stall (a client that stops reading) or all (rps, scale and floor)")
		out        = flag.String("out", "", "also write the results as JSON to this file")
		protos     = flag.String("protos", "h1,h2", "protocols to test, comma-separated: h1 (HTTP/1.1), h2 (h2c)")
		rpsRounds  = flag.Int("rps-rounds", 12, "rps: rounds, each one run with and one without the module")
		rpsSim     = flag.Int("rps-simultaneous", 6, "rps: rounds that load both sides at once")
		rpsTime    = flag.Duration("rps-duration", 4*time.Second, "rps: length of one run")
		rpsConns   = flag.Int("rps-conns", 50, "rps: client connections")
		rpsOthers  = flag.String("rps-sides", "", "rps: comma-separated sites to run in every round besides with and without: aa (a second site without the module, to calibrate) and floor (the fast-path floor, floormod.go)")
		n          = flag.Int("n", 10000, "scale: concurrent requests")
		holdFor    = flag.Duration("hold", 30*time.Second, "scale: how long the server holds each request")
		delay      = flag.Duration("delay", time.Second, "scale: processing delay")
		interval   = flag.Duration("interval", time.Second, "scale: processing interval")
		ramp       = flag.Duration("ramp", 5*time.Second, "scale: time over which the requests are spread")
		streams    = flag.Int("streams", 100, "scale: HTTP/2 streams per connection")
		pairs      = flag.Int("pairs", 2, "scale: runs without then with the module; stall: phases without then with stallers; the first pair also warms the process up")
		stallers   = flag.Int("stallers", 10, "stall: clients that stop reading, in the phases with stallers")
		stallStrm  = flag.Int("stall-streams", 100, "stall: long streams each HTTP/2 staller opens behind its blocked download")
		cpuProfile = flag.String("cpuprofile", "", "scale: write a CPU profile of the server during the runs with the module to this file")
		memProfile = flag.String("memprofile", "", "scale: write heap profiles of the server with every request in flight to this file, suffixed .with and .without (compare them with go tool pprof -diff_base)")
		withLines  = flag.String("with", "", "scale: the Caddyfile lines of the run with the module (default: processing with -delay and -interval); a comment such as '# A/A' runs both sides without it, which calibrates the method")
		clientMode = flag.Bool("client", false, "internal: run as the scale test's client, config as JSON on stdin")
	)
	flag.Parse()
	profilePath = *cpuProfile
	if memProfilePath = *memProfile; memProfilePath != "" {
		// Finer than the default of one sample per 512 KiB: the module's
		// share is a few hundred bytes per request.
		runtime.MemProfileRate = 64
	}

	if *clientMode {
		var c clientConfig
		if err := json.NewDecoder(os.Stdin).Decode(&c); err != nil {
			logf.Fatal(err)
		}
		if err := runClient(c); err != nil {
			logf.Fatal(err)
		}
		return
	}

	report := map[string]any{"machine": machine()}
	var err error
	if *mode == "floor" || *mode == "all" {
		var f *floorReport
		if f, err = runFloor(*n, *interval, *holdFor); err != nil {
			logf.Fatal(err)
		}
		report["floor"] = f
	}
	for _, p := range strings.Split(*protos, ",") {
		if *mode == "rps" || *mode == "all" {
			var r *rpsReport
			var others []string
			if *rpsOthers != "" {
				others = strings.Split(*rpsOthers, ",")
			}
			r, err = runRPS(p, *rpsRounds, *rpsSim, *rpsTime, *rpsConns, others)
			if err != nil {
				break
			}
			report["rps_"+p] = r
		}
		if *mode == "scale" || *mode == "xfloor" || *mode == "all" {
			var reps []*scaleReport
			for range *pairs {
				var r *scaleReport
				r, err = runScale(scaleConfig{
					Proto: p, N: *n, Hold: *holdFor, Delay: *delay, Interval: *interval,
					Ramp: *ramp, StreamsPerConn: *streams, WithLines: *withLines,
					Plain: *mode == "xfloor",
				})
				if err != nil {
					break
				}
				reps = append(reps, r)
			}
			if err != nil {
				break
			}
			key := "scale_"
			if *mode == "xfloor" {
				key = "xfloor_"
			}
			report[key+p] = reps
		}
		if *mode == "stall" {
			var r *stallReport
			r, err = runStall(scaleConfig{
				Proto: p, N: *n, Hold: *holdFor, Delay: *delay, Interval: *interval,
				Ramp: *ramp, StreamsPerConn: *streams, WithLines: *withLines,
			}, *stallers, *stallStrm, *pairs)
			if err != nil {
				break
			}
			report["stall_"+p] = r
		}
	}
	_ = caddy.Stop()
	report["loadavg_end"] = loadavg()
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			logf.Fatal(err)
		}
		b, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			logf.Fatal(err)
		}
	}
	if err != nil {
		logf.Fatal(err)
	}
}

// writeHeapProfile writes the heap profile as of the last GC (sampleMemory
// ran two).
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profilePath is where -cpuprofile writes, if set: one file for each
// protocol and test, with that suffix.
var profilePath string

// memProfilePath is where -memprofile writes, if set.
var memProfilePath string

// startProfile starts a CPU profile into path; stop ends it. Only one
// profile may run at a time, so a loop profiles only its first turn.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// ---- scale -----------------------------------------------------------------

type scaleConfig struct {
	// Plain runs the load against Go's own server, without Caddy, whose
	// handlers write their 102s themselves (plain.go): the libraries'
	// floor for a 102.
	Plain          bool
	Proto          string
	N              int
	Hold           time.Duration
	Delay          time.Duration
	Interval       time.Duration
	Ramp           time.Duration
	StreamsPerConn int
	WithLines      string
}

// scaleRun is one run of the scale load, with or without the module.
type scaleRun struct {
	Client clientResult `json:"client"`
	// Memory before the load and with every request in flight.
	MemBefore memSample `json:"mem_before"`
	MemDuring memSample `json:"mem_during"`
	// PerRequest is (during - before) / N: what one in-flight request
	// holds, Caddy's own share included.
	PerRequest float64 `json:"bytes_per_request"`
	// CPU of the server process from the first request to the last.
	CPU  time.Duration `json:"server_cpu"`
	Wall time.Duration `json:"wall"`
	// Writes is the server's write system calls in that time.
	Writes uint64 `json:"write_calls"`
	// ServerLateness is the module's own measure of its 102s' lateness.
	ServerLateness serverLateness `json:"server_lateness"`
	LoadAvg        string         `json:"loadavg"`
}

type scaleReport struct {
	Config  scaleConfig `json:"config"`
	Without scaleRun    `json:"without"`
	With    scaleRun    `json:"with"`
	// The module's share of each in-flight request's memory: live heap,
	// and the runtime's count of all stack memory, which is not one
	// request's; StackUsed is the part of the stacks the last GC scanned.
	ModuleHeapPerRequest      float64 `json:"module_heap_per_request"`
	ModuleStackUsedPerRequest float64 `json:"module_stack_used_per_request"`
	ModuleStacksPerRequest    float64 `json:"module_stacks_per_request"`
	// (CPU with - CPU without) / 102s sent.
	CPUPerInterim time.Duration `json:"cpu_per_interim"`
	// (write calls with - without) / 102s sent: below 1 where 102s share
	// a write.
	WritesPerInterim float64 `json:"writes_per_interim"`
}

func runScale(c scaleConfig) (*scaleReport, error) {
	rep := &scaleReport{Config: c}
	for _, with := range []bool{false, true} {
		run, err := scaleOnce(c, with)
		if err != nil {
			return nil, err
		}
		if with {
			rep.With = *run
		} else {
			rep.Without = *run
		}
	}
	// The module's share compares the two runs' samples with every
	// request in flight, not their growth from each run's own start: the
	// first run of a process leaves structures behind (grown maps and
	// pools of net/http and Caddy) that the next run reuses, which makes
	// the second run's growth look smaller by about 1 KB per request.
	during := func(r scaleRun, part func(memSample) uint64) float64 {
		return float64(part(r.MemDuring)) / float64(c.N)
	}
	heap := func(m memSample) uint64 { return m.HeapLive }
	stacks := func(m memSample) uint64 { return m.Stacks }
	scanned := func(m memSample) uint64 { return m.StackScanned }
	rep.ModuleHeapPerRequest = during(rep.With, heap) - during(rep.Without, heap)
	rep.ModuleStacksPerRequest = during(rep.With, stacks) - during(rep.Without, stacks)
	rep.ModuleStackUsedPerRequest = during(rep.With, scanned) - during(rep.Without, scanned)
	if n := rep.With.Client.Interims; n > 0 {
		rep.CPUPerInterim = (rep.With.CPU - rep.Without.CPU) / time.Duration(n)
		rep.WritesPerInterim = (float64(rep.With.Writes) - float64(rep.Without.Writes)) / float64(n)
	}
	cl := rep.With.Client
	logf.Printf("scale %s: with: %d/%d completed, %d failed, %d 102s, lateness p50 %.1f ms p99 %.1f ms max %.1f ms, %d early, shortest gap %.1f ms, %d gaps shorter than interval-grid",
		c.Proto, cl.Completed, c.N, cl.Failed, cl.Interims, cl.LateP50, cl.LateP99, cl.LateMax, cl.Early, cl.GapMin, cl.ShortGaps)
	if sl := rep.With.ServerLateness; sl.Count > 0 {
		logf.Printf("scale %s: with: the server's own lateness histogram: %.0f 102s, p50 at most %g ms, p99 at most %g ms",
			c.Proto, sl.Count, sl.P50AtMs, sl.P99AtMs)
	}
	logf.Printf("scale %s: without: %d/%d completed, %d failed", c.Proto, rep.Without.Client.Completed, c.N, rep.Without.Client.Failed)
	logf.Printf("scale %s: memory per in-flight request: %.0f B with, %.0f B without (growth from each run's start); the module adds heap %+.0f B (stack used %+.0f B; all stack memory of the process %+.0f B)",
		c.Proto, rep.With.PerRequest, rep.Without.PerRequest, rep.ModuleHeapPerRequest,
		rep.ModuleStackUsedPerRequest, rep.ModuleStacksPerRequest)
	logf.Printf("scale %s: a new goroutine's stack, by the runtime's last GC before and during the load: %d and %d B without, %d and %d B with",
		c.Proto, rep.Without.MemBefore.StackStart, rep.Without.MemDuring.StackStart, rep.With.MemBefore.StackStart, rep.With.MemDuring.StackStart)
	logf.Printf("scale %s: server CPU %v with, %v without (wall %v): %v per 102",
		c.Proto, rep.With.CPU.Round(time.Millisecond), rep.Without.CPU.Round(time.Millisecond),
		rep.With.Wall.Round(time.Millisecond), rep.CPUPerInterim)
	logf.Printf("scale %s: write calls %d with, %d without: %.2f per 102", c.Proto, rep.With.Writes, rep.Without.Writes, rep.WritesPerInterim)
	return rep, nil
}

func scaleOnce(c scaleConfig, with bool) (*scaleRun, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	directive := ""
	if with {
		directive = c.WithLines
		if directive == "" {
			directive = fmt.Sprintf("processing {\n\t\tdelay %s\n\t\tinterval %s\n\t}", c.Delay, c.Interval)
		}
	}
	metricsURL := ""
	if c.Plain {
		// "with" is with 102s, written by the handler itself.
		stop, err := startPlain(c, port, with)
		if err != nil {
			return nil, err
		}
		defer stop()
	} else {
		// A second site serves the config's metrics, for the module's
		// lateness histogram (lateness.go).
		mport, err := freePort()
		if err != nil {
			return nil, err
		}
		metricsURL = fmt.Sprintf("http://127.0.0.1:%d/", mport)
		if err := loadCaddy(fmt.Sprintf("http://127.0.0.1:%d {\n\t%s\n\tloadtest_hold %s\n}\nhttp://127.0.0.1:%d {\n\tmetrics\n}\n", port, directive, c.Hold, mport)); err != nil {
			return nil, err
		}
	}
	logf.Printf("scale %s, plain Go server %v, module or 102s %v: %d requests over %v, held %v", c.Proto, c.Plain, with, c.N, c.Ramp, c.Hold)

	run := &scaleRun{MemBefore: sampleMemory()}
	cfg, _ := json.Marshal(clientConfig{
		Proto: c.Proto, Addr: fmt.Sprintf("127.0.0.1:%d", port), N: c.N, StreamsPerConn: c.StreamsPerConn,
		Ramp: c.Ramp, Delay: c.Delay, Interval: c.Interval, Timeout: c.Hold + time.Minute,
	})
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-client")
	cmd.Stdin = strings.NewReader(string(cfg))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if with && profilePath != "" {
		stop, err := startProfile(profilePath + "." + c.Proto + ".scale")
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	var lateBefore latenessBuckets
	if metricsURL != "" {
		if lateBefore, err = scrapeLateness(metricsURL); err != nil {
			return nil, err
		}
	}
	cpu0, t0, w0 := cpuTime(), time.Now(), writeCalls()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ramped" {
		_ = cmd.Wait()
		return nil, fmt.Errorf("client: expected \"ramped\", got %q", lines.Text())
	}
	// Sample with every request in flight, a few 102s in and well before
	// the first request ends.
	if wait := min(c.Hold/3, 10*time.Second) - time.Since(t0.Add(c.Ramp)); wait > 0 {
		time.Sleep(wait)
	}
	run.MemDuring = sampleMemory()
	if memProfilePath != "" {
		if err := writeHeapProfile(fmt.Sprintf("%s.%s.%s", memProfilePath, c.Proto, map[bool]string{true: "with", false: "without"}[with])); err != nil {
			return nil, err
		}
	}
	run.LoadAvg = loadavg()
	rest, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("client: %v", err)
	}
	run.CPU, run.Wall, run.Writes = cpuTime()-cpu0, time.Since(t0), writeCalls()-w0
	if metricsURL != "" {
		lateAfter, err := scrapeLateness(metricsURL)
		if err != nil {
			return nil, err
		}
		run.ServerLateness = between(lateBefore, lateAfter)
	}
	if err := json.Unmarshal(rest, &run.Client); err != nil {
		return nil, fmt.Errorf("client result %q: %v", rest, err)
	}
	run.PerRequest = (float64(run.MemDuring.total()) - float64(run.MemBefore.total())) / float64(c.N)
	return run, nil
}

// ---- machine ---------------------------------------------------------------

func machine() map[string]any {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return map[string]any{
		"cpus": runtime.NumCPU(), "cpu_model": cpu, "go": runtime.Version(),
		"loadavg_start": loadavg(), "date": time.Now().UTC().Format(time.RFC3339),
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
