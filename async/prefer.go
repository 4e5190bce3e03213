package async

import (
	"math"
	"strconv"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/prefer"
)

// asyncPreference is what a request's Prefer fields ask of async mode:
// respond-async (RFC 7240 §4.1), and the longest it wants to wait for a
// direct answer (§4.3), if it said so with a valid number of seconds.
type asyncPreference struct {
	respondAsync bool
	// processing: draft-wright-http-progress's preference for 102s
	// (progress.go).
	processing bool
	wait       time.Duration
	hasWait    bool
}

// preferAsync reads the async preferences from the Prefer field lines. A
// wait whose value is not delta-seconds (1*DIGIT) is ignored, as RFC 7240
// §2 lets a server ignore any preference it does not understand.
func preferAsync(lines []string) asyncPreference {
	var a asyncPreference
	if len(lines) == 0 {
		return a
	}
	for _, p := range prefer.Parse(lines) {
		switch p.Name {
		case "respond-async":
			a.respondAsync = true
		case "processing":
			a.processing = true
		case "wait":
			if secs, ok := deltaSeconds(p.Value); ok {
				a.wait, a.hasWait = secs, true
			}
		}
	}
	return a
}

// deltaSeconds parses 1*DIGIT as seconds, saturating far beyond any wait
// this module would honour.
func deltaSeconds(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > math.MaxInt64/uint64(time.Second) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * time.Second, true
}
