package main

// Target 2: requests per second through a real Caddy on the fast path,
// with the module and without, measured by wrk (HTTP/1.1) and h2load
// (HTTP/2 over h2c, prior knowledge).

import (
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"time"
)

type rpsRound struct {
	With    float64 `json:"with"`
	Without float64 `json:"without"`
	Ratio   float64 `json:"ratio"`
	// Alternated rounds only: the server process's CPU per request, and
	// without / with of it, the rate ratio a CPU-bound server would show.
	// CPU per request is far less sensitive than the rate to what the
	// rest of a shared machine does.
	WithCPU    time.Duration `json:"with_cpu_per_request,omitempty"`
	WithoutCPU time.Duration `json:"without_cpu_per_request,omitempty"`
	CPURatio   float64       `json:"cpu_ratio,omitempty"`
	// Others are the round's figures for the sides other than with
	// (-rps-sides), each against the same round's without.
	Others map[string]rpsSide `json:"others,omitempty"`
}

// rpsSide is one side's figures in a round, against that round's without.
type rpsSide struct {
	Rate     float64       `json:"rate"`
	Ratio    float64       `json:"ratio"`
	CPU      time.Duration `json:"cpu_per_request"`
	CPURatio float64       `json:"cpu_ratio"`
}

// rpsSides are the sites an rps run may compare with the site without the
// module, besides the one with it: "aa", a second site without the module,
// whose ratio calibrates the method (an A/A run: any distance from 1 is
// the noise of the machine and of the method), and "floor", a site with
// the fast-path floor (floormod.go).
var rpsSides = map[string]string{
	"aa":    "",
	"floor": "loadtest_floor\n\t",
}

type rpsReport struct {
	Tool   string     `json:"tool"`
	Conns  int        `json:"conns"`
	Length string     `json:"run_length"`
	Rounds []rpsRound `json:"rounds"`
	// MedianRatio is the median of the rounds' with/without ratios;
	// TotalRatio divides the sums of all runs.
	MedianRatio float64 `json:"median_ratio"`
	TotalRatio  float64 `json:"total_ratio"`
	// MedianCPURatio is the median of the rounds' CPU ratios, and
	// GeoMeanCPURatio their geometric mean: the mean of ratios that
	// treats a round 2 % up and one 2 % down as no change.
	MedianCPURatio  float64 `json:"median_cpu_ratio"`
	GeoMeanCPURatio float64 `json:"geomean_cpu_ratio"`
	// OtherMedians are the medians of the other sides' ratios.
	OtherMedians map[string]rpsMedians `json:"other_medians,omitempty"`
	// Simultaneous rounds load both sides at once (see runRPS).
	Simultaneous       []rpsRound `json:"simultaneous"`
	SimultaneousMedian float64    `json:"simultaneous_median_ratio"`
	LoadAvg            string     `json:"loadavg"`
}

type rpsMedians struct {
	Ratio           float64 `json:"median_ratio"`
	CPURatio        float64 `json:"median_cpu_ratio"`
	GeoMeanCPURatio float64 `json:"geomean_cpu_ratio"`
}

var (
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	h2loadRate = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s`)
	h2loadOK   = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed`)
)

// runRPS loads one Caddy with two sites that differ only in the
// `processing` line, and one more site for each of others (rpsSides), then
// runs the load tool against each in turn, in an order that rotates every
// round.
func runRPS(proto string, rounds, simultaneous int, length time.Duration, conns int, others []string) (*rpsReport, error) {
	withPort, err := freePort()
	if err != nil {
		return nil, err
	}
	withoutPort, err := freePort()
	if err != nil {
		return nil, err
	}
	// A 20 s delay: every request here finishes long before its first 102.
	sites := fmt.Sprintf(`http://127.0.0.1:%d {
	processing 20s
	respond "hello"
}
http://127.0.0.1:%d {
	respond "hello"
}
`, withPort, withoutPort)
	otherPorts := make([]int, len(others))
	for i, name := range others {
		lines, ok := rpsSides[name]
		if !ok {
			return nil, fmt.Errorf("-rps-sides: unknown side %q", name)
		}
		if otherPorts[i], err = freePort(); err != nil {
			return nil, err
		}
		sites += fmt.Sprintf("http://127.0.0.1:%d {\n\t%srespond \"hello\"\n}\n", otherPorts[i], lines)
	}
	if err := loadCaddy(sites); err != nil {
		return nil, err
	}
	rep := &rpsReport{Tool: "wrk", Conns: conns, Length: length.String()}
	if proto != "h1" {
		rep.Tool = "h2load"
	}
	run := func(port, conns int) (float64, error) {
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		secs := strconv.Itoa(int(length.Seconds()))
		if proto == "h1" {
			return measure(exec.Command("wrk", "-t", "1", "-c", strconv.Itoa(conns), "-d", secs+"s", url), wrkRate)
		}
		// -m 10: ten streams in flight per connection, as a browser would.
		return measure(exec.Command("h2load", "-t", "1", "-c", strconv.Itoa(conns), "-m", "10", "-D", secs, url), h2loadRate)
	}
	// Every site in turn: without, with, then the others.
	names := append([]string{"without", "with"}, others...)
	ports := append([]int{withoutPort, withPort}, otherPorts...)
	// A short warm-up of each side: connection setup, pools, caches.
	for _, p := range ports {
		if _, err := runShort(proto, p); err != nil {
			return nil, err
		}
	}
	var sumWith, sumWithout float64
	for i := range rounds {
		// The order rotates, so that a drift in the machine's load
		// favours no side.
		rates := make([]float64, len(ports))
		cpus := make([]time.Duration, len(ports))
		for k := range ports {
			j := (i + k) % len(ports)
			stopProfile := func() {}
			if names[j] == "with" && profilePath != "" && i == 0 {
				var err error
				if stopProfile, err = startProfile(profilePath + "." + proto + ".rps"); err != nil {
					return nil, err
				}
			}
			cpu0 := cpuTime()
			rate, err := run(ports[j], conns)
			stopProfile()
			if err != nil {
				return nil, err
			}
			rates[j] = rate
			cpus[j] = time.Duration(float64(cpuTime()-cpu0) / (rate * length.Seconds()))
		}
		r := rpsRound{With: rates[1], Without: rates[0], WithCPU: cpus[1], WithoutCPU: cpus[0]}
		r.Ratio = r.With / r.Without
		r.CPURatio = float64(r.WithoutCPU) / float64(r.WithCPU)
		line := ""
		for j := 2; j < len(ports); j++ {
			if r.Others == nil {
				r.Others = map[string]rpsSide{}
			}
			side := rpsSide{Rate: rates[j], Ratio: rates[j] / rates[0], CPU: cpus[j], CPURatio: float64(cpus[0]) / float64(cpus[j])}
			r.Others[names[j]] = side
			line += fmt.Sprintf("; %s %.0f req/s, ratio %.4f, CPU per request %v, ratio %.4f", names[j], side.Rate, side.Ratio, side.CPU, side.CPURatio)
		}
		sumWith += r.With
		sumWithout += r.Without
		rep.Rounds = append(rep.Rounds, r)
		logf.Printf("rps %s round %d: with %.0f req/s, without %.0f req/s, ratio %.4f; server CPU per request with %v, without %v, ratio %.4f%s",
			proto, i+1, r.With, r.Without, r.Ratio, r.WithCPU, r.WithoutCPU, r.CPURatio, line)
	}
	for _, name := range others {
		ratios := make([]rpsRound, len(rep.Rounds))
		cpuRatios := make([]rpsRound, len(rep.Rounds))
		for i, r := range rep.Rounds {
			ratios[i].Ratio, cpuRatios[i].Ratio = r.Others[name].Ratio, r.Others[name].CPURatio
		}
		if rep.OtherMedians == nil {
			rep.OtherMedians = map[string]rpsMedians{}
		}
		m := rpsMedians{Ratio: medianRatio(ratios), CPURatio: medianRatio(cpuRatios), GeoMeanCPURatio: geoMeanRatio(cpuRatios)}
		rep.OtherMedians[name] = m
		logf.Printf("rps %s (%s): %s against without: median ratio %.4f, CPU ratio median %.4f, geometric mean %.4f", proto, rep.Tool, name, m.Ratio, m.CPURatio, m.GeoMeanCPURatio)
	}
	// Simultaneous rounds: both sides under load at once, by two clients
	// with half the connections each. Both see exactly the same noise
	// from the rest of the machine, and the Go scheduler gives their
	// connections equal shares of the CPU, so the ratio of their rates is
	// the ratio of their costs per request.
	for i := range simultaneous {
		var r rpsRound
		errs := make(chan error, 2)
		for _, with := range []bool{true, false} {
			go func() {
				port, rate := withoutPort, &r.Without
				if with {
					port, rate = withPort, &r.With
				}
				var err error
				*rate, err = run(port, max(1, conns/2))
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				return nil, err
			}
		}
		r.Ratio = r.With / r.Without
		rep.Simultaneous = append(rep.Simultaneous, r)
		logf.Printf("rps %s simultaneous round %d: with %.0f req/s, without %.0f req/s, ratio %.4f", proto, i+1, r.With, r.Without, r.Ratio)
	}
	rep.SimultaneousMedian = medianRatio(rep.Simultaneous)

	rep.MedianRatio = medianRatio(rep.Rounds)
	cpuRatios := make([]rpsRound, len(rep.Rounds))
	for i, r := range rep.Rounds {
		cpuRatios[i].Ratio = r.CPURatio
	}
	rep.MedianCPURatio = medianRatio(cpuRatios)
	rep.GeoMeanCPURatio = geoMeanRatio(cpuRatios)
	rep.TotalRatio = sumWith / sumWithout
	rep.LoadAvg = loadavg()
	logf.Printf("rps %s (%s): alternated: median ratio %.4f, total ratio %.4f, CPU ratio median %.4f, geometric mean %.4f; simultaneous: median ratio %.4f",
		proto, rep.Tool, rep.MedianRatio, rep.TotalRatio, rep.MedianCPURatio, rep.GeoMeanCPURatio, rep.SimultaneousMedian)
	return rep, nil
}

// geoMeanRatio is the geometric mean of the rounds' ratios.
func geoMeanRatio(rounds []rpsRound) float64 {
	if len(rounds) == 0 {
		return 0
	}
	var sum float64
	for _, r := range rounds {
		sum += math.Log(r.Ratio)
	}
	return math.Exp(sum / float64(len(rounds)))
}

func medianRatio(rounds []rpsRound) float64 {
	ratios := make([]float64, 0, len(rounds))
	for _, r := range rounds {
		ratios = append(ratios, r.Ratio)
	}
	slices.Sort(ratios)
	switch n := len(ratios); {
	case n == 0:
		return 0
	case n%2 == 1:
		return ratios[n/2]
	default:
		return (ratios[n/2-1] + ratios[n/2]) / 2
	}
}

// runShort is a one-second run whose figure is thrown away.
func runShort(proto string, port int) (float64, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if proto == "h1" {
		return measure(exec.Command("wrk", "-t", "1", "-c", "10", "-d", "1s", url), wrkRate)
	}
	return measure(exec.Command("h2load", "-t", "1", "-c", "10", "-m", "10", "-D", "1", url), h2loadRate)
}

// measure runs a load tool and reads its requests per second; a run with
// failed requests is an error, not a figure.
func measure(cmd *exec.Cmd, rate *regexp.Regexp) (float64, error) {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", cmd, err, out)
	}
	m := rate.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s: no rate in output:\n%s", cmd, out)
	}
	if ok := h2loadOK.FindSubmatch(out); ok != nil && string(ok[2]) != "0" {
		return 0, fmt.Errorf("%s: %s requests failed:\n%s", cmd, ok[2], out)
	}
	if regexp.MustCompile(`Non-2xx or 3xx responses`).Match(out) {
		return 0, fmt.Errorf("%s: errors:\n%s", cmd, out)
	}
	// wrk counts a request slower than 2 s as a socket timeout: a stall
	// of the machine, which the figure shows anyway.
	if m := regexp.MustCompile(`Socket errors: .*`).Find(out); m != nil {
		logf.Printf("%s: %s", cmd, m)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
