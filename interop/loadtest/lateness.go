package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
)

// The server's own measure of 102 lateness: the module's histogram
// caddy_http_processing_interim_lateness_seconds, read from a `metrics`
// site of the same Caddy before and after a run. The client's lateness
// counts from when it wrote the request, so it adds the time the server
// took to accept and read it, and the client's own delays in reading the
// 102s; this one is the module's schedule against its own clock.

// latenessBuckets maps a bucket's upper bound (seconds) to its cumulative
// count, summed over servers.
type latenessBuckets map[float64]float64

var latenessBucket = regexp.MustCompile(`(?m)^caddy_http_processing_interim_lateness_seconds_bucket\{[^}]*le="([^"]+)"\} (\S+)$`)

// scrapeLateness reads the histogram from a metrics endpoint.
func scrapeLateness(url string) (latenessBuckets, error) {
	res, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	b := latenessBuckets{}
	for _, m := range latenessBucket.FindAllSubmatch(body, -1) {
		le, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			return nil, fmt.Errorf("bucket bound %q: %v", m[1], err)
		}
		n, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			return nil, fmt.Errorf("bucket count %q: %v", m[2], err)
		}
		b[le] += n
	}
	return b, nil
}

// serverLateness is the histogram of one run: the bounds (ms) below which
// half and 99 % of its 102s went out, and how many it counted.
type serverLateness struct {
	Count   float64 `json:"count"`
	P50AtMs float64 `json:"p50_at_most_ms"`
	P99AtMs float64 `json:"p99_at_most_ms"`
}

// between is after's observations less before's.
func between(before, after latenessBuckets) serverLateness {
	bounds := make([]float64, 0, len(after))
	for le := range after {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds) // +Inf last
	var s serverLateness
	if len(bounds) == 0 {
		return s
	}
	s.Count = after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	quantile := func(q float64) float64 {
		for _, le := range bounds {
			if after[le]-before[le] >= q*s.Count {
				return le * 1000
			}
		}
		return bounds[len(bounds)-1] * 1000
	}
	if s.Count > 0 {
		s.P50AtMs, s.P99AtMs = quantile(0.5), quantile(0.99)
	}
	return s
}
