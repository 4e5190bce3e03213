package main

// Target 2: requests per second through a real Caddy on the fast path,
// with the module and without, measured by wrk (HTTP/1.1) and h2load
// (HTTP/2 over h2c, prior knowledge).

import (
	"fmt"
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
	LoadAvg     string  `json:"loadavg"`
}

var (
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	h2loadRate = regexp.MustCompile(`finished in [0-9.]+m?s, ([0-9.]+) req/s`)
	h2loadOK   = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed`)
)

// runRPS loads one Caddy with two sites that differ only in the
// `processing` line, then runs the load tool against each in turn. The
// order swaps every round (with first, then without first), so that a
// drift in the machine's load favours neither.
func runRPS(proto string, rounds int, length time.Duration, conns int) (*rpsReport, error) {
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
	if err := loadCaddy(sites); err != nil {
		return nil, err
	}
	rep := &rpsReport{Conns: conns, Length: length.String()}
	run := func(port int) (float64, error) {
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		secs := strconv.Itoa(int(length.Seconds()))
		if proto == "h1" {
			rep.Tool = "wrk"
			return measure(exec.Command("wrk", "-t", "1", "-c", strconv.Itoa(conns), "-d", secs+"s", url), wrkRate)
		}
		rep.Tool = "h2load"
		// -m 10: ten streams in flight per connection, as a browser would.
		return measure(exec.Command("h2load", "-t", "1", "-c", strconv.Itoa(conns), "-m", "10", "-D", secs, url), h2loadRate)
	}
	// A short warm-up of each side: connection setup, pools, caches.
	for _, p := range []int{withPort, withoutPort} {
		if _, err := runShort(proto, p); err != nil {
			return nil, err
		}
	}
	var sumWith, sumWithout float64
	for i := range rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		var r rpsRound
		for _, with := range order {
			port := withoutPort
			if with {
				port = withPort
			}
			rate, err := run(port)
			if err != nil {
				return nil, err
			}
			if with {
				r.With = rate
			} else {
				r.Without = rate
			}
		}
		r.Ratio = r.With / r.Without
		sumWith += r.With
		sumWithout += r.Without
		rep.Rounds = append(rep.Rounds, r)
		logf.Printf("rps %s round %d: with %.0f req/s, without %.0f req/s, ratio %.4f", proto, i+1, r.With, r.Without, r.Ratio)
	}
	ratios := make([]float64, 0, len(rep.Rounds))
	for _, r := range rep.Rounds {
		ratios = append(ratios, r.Ratio)
	}
	slices.Sort(ratios)
	if n := len(ratios); n%2 == 1 {
		rep.MedianRatio = ratios[n/2]
	} else if n > 0 {
		rep.MedianRatio = (ratios[n/2-1] + ratios[n/2]) / 2
	}
	rep.TotalRatio = sumWith / sumWithout
	rep.LoadAvg = loadavg()
	logf.Printf("rps %s (%s): median ratio %.4f, total ratio %.4f", proto, rep.Tool, rep.MedianRatio, rep.TotalRatio)
	return rep, nil
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
	if regexp.MustCompile(`Non-2xx or 3xx responses|Socket errors`).Match(out) {
		return 0, fmt.Errorf("%s: errors:\n%s", cmd, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
