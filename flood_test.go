package processing

// A flood of idle long requests: slow upstreams that hold every request
// open, and slow clients that read nothing while they wait. The module's
// cost per waiting request is measured against the same flood on a route
// without it: a bounded number of bytes, no goroutine, and no growth while
// the requests sit; `max` bounds the 102s each one gets.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// What the module may add per waiting request (docs/failures.md, "Many
// slow requests at once"), measured against the same flood without it.
const (
	// maxHeapPerWaitingRequest: twice the module's bound of 256 B (see
	// BenchmarkInFlightMemory), room for GC noise on a busy machine.
	maxHeapPerWaitingRequest = 512
	// maxGrowthPerWaitingRequest: memory does not grow while requests wait
	// at max; 128 B each is room for what the rest of the process
	// allocates meanwhile.
	maxGrowthPerWaitingRequest = 128
	// maxSharedGoroutines: no goroutine per waiting request; a goroutine
	// shared by all requests, such as
	// a timer wheel's, or one of the runtime's passing by, may be counted.
	// One per request would count n.
	maxSharedGoroutines = 2
)

// floodHeap is the live heap after collection: what the waiting requests
// hold, not what they have thrown away.
func floodHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestIdleFloodCostAndMax(t *testing.T) {
	harness.LeakCheck(t)
	n := harness.EnvCount(t, "FLOOD_REQUESTS", 400)
	const max102 = 3
	var (
		started atomic.Int64
		// release is swapped for each flood; the handlers run on other
		// goroutines, hence the atomic.
		release atomic.Pointer[chan struct{}]
	)
	fresh := make(chan struct{})
	release.Store(&fresh)
	releaseOf := func() chan struct{} { return *release.Load() }
	harness.SetBehaviour(t, "flood", func(w http.ResponseWriter, r *http.Request) error {
		rel := releaseOf()
		started.Add(1)
		select {
		case <-rel:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		w.Header().Set("Content-Type", "text/plain")
		_, err := w.Write([]byte("done"))
		return err
	})
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	@proc path /proc
	processing @proc {
		delay 5ms
		interval 5ms
		max 3
		header X-Progress "{http.processing.count}"
	}
	test_work flood
}
`)

	// open sends n requests to path from clients that then read nothing,
	// and waits until every one is in the slow upstream.
	open := func(path string) []net.Conn {
		started.Store(0)
		conns := make([]net.Conn, 0, n)
		for range n {
			conn, err := harness.DialRaw(harness.Loopback(port))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
			if _, err := io.WriteString(conn, harness.RawGet(path)); err != nil {
				t.Fatal(err)
			}
		}
		harness.Eventually(t, fmt.Sprintf("%d requests to %s waiting", n, path), func() bool { return started.Load() == int64(n) })
		return conns
	}
	// finish lets the upstream answer and reads every response, checking
	// that each got exactly want 102s.
	finish := func(conns []net.Conn, want int) {
		close(releaseOf())
		for i, conn := range conns {
			res, err := harness.ReadRawResponse(bufio.NewReader(conn), time.Now(), false)
			conn.Close()
			if err != nil {
				t.Fatalf("request %d: %v\n%s", i, err, res.Wire)
			}
			if res.Status != 200 || string(res.Body) != "done" {
				t.Fatalf("request %d: %d %q", i, res.Status, res.Body)
			}
			if len(res.Interims) != want {
				t.Fatalf("request %d got %d 102s, want %d:\n%s", i, len(res.Interims), want, res.Wire)
			}
			harness.CheckProgress(t, res, want)
		}
		next := make(chan struct{})
		release.Store(&next)
	}

	// atMax waits until the flood's requests have had every 102 they may
	// get; on a timeout it says how far the count got, over or under.
	atMax := func(sent0 float64) {
		t.Helper()
		want := float64(n * max102)
		var got float64
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if got = harness.InterimsSent(t) - sent0; got == want {
				return
			}
		}
		t.Fatalf("timed out waiting for every request at max: %v 102s sent since the flood began, want %v (%d requests, max %d)", got, want, n, max102)
	}

	// Warm both routes, so that pools and lazily built state exist before
	// anything is measured.
	finish(open("/bare"), 0)
	sent0 := harness.InterimsSent(t)
	warm := open("/proc")
	atMax(sent0)
	finish(warm, max102)

	// The same flood without and with the module.
	heap0, g0 := floodHeap(), runtime.NumGoroutine()
	bare := open("/bare")
	time.Sleep(100 * time.Millisecond)
	heapBare, gBare := floodHeap(), runtime.NumGoroutine()
	finish(bare, 0)

	heap1, g1 := floodHeap(), runtime.NumGoroutine()
	sent0 = harness.InterimsSent(t)
	proc := open("/proc")
	atMax(sent0)
	heapProc, gProc := floodHeap(), runtime.NumGoroutine()
	// Forty more intervals of waiting: max holds, and nothing piles up.
	time.Sleep(200 * time.Millisecond)
	heapLater := floodHeap()
	if sent := harness.InterimsSent(t) - sent0; sent != float64(n*max102) {
		t.Errorf("%v 102s for %d requests with max %d", sent, n, max102)
	}
	finish(proc, max102)

	perBare := (float64(heapBare) - float64(heap0)) / float64(n)
	perProc := (float64(heapProc) - float64(heap1)) / float64(n)
	module := perProc - perBare
	growth := (float64(heapLater) - float64(heapProc)) / float64(n)
	t.Logf("%d idle requests: %.0f B each without processing, %.0f B with (module: %.0f B); %+.0f B/request change over 40 intervals at max; goroutines per request %.2f without, %.2f with",
		n, perBare, perProc, module, growth, float64(gBare-g0)/float64(n), float64(gProc-g1)/float64(n))
	if module > maxHeapPerWaitingRequest {
		t.Errorf("the module holds %.0f B per waiting request, at most %d B", module, maxHeapPerWaitingRequest)
	}
	if growth > maxGrowthPerWaitingRequest {
		t.Errorf("waiting requests grew by %.0f B each at max (at most %d B)", growth, maxGrowthPerWaitingRequest)
	}
	// Each waiting request holds net/http's connection goroutine and its
	// background reader, with or without the module: the module's 102s
	// are scheduled, and no goroutine of its own waits for them.
	if extra := (gProc - g1) - (gBare - g0); extra > maxSharedGoroutines {
		t.Errorf("%d more goroutines with the module for %d waiting requests (at most %d shared by all)", extra, n, maxSharedGoroutines)
	}
}
