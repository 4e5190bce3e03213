package async_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// pieceSize is resultPieceSize, as the stored layout shows it.
const pieceSize = 256 << 10

// bigBody is n bytes that do not repeat with the piece size.
func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/1001)
	}
	return b
}

// TestAsyncResultStoredInPieces: a result is stored as a versioned head
// and pieces of at most 256 KiB, and served byte for byte.
func TestAsyncResultStoredInPieces(t *testing.T) {
	body := bigBody(4*pieceSize + 3)
	harness.SetBehaviour(t, "async_pieces", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(200 * time.Millisecond)
		for p := body; len(p) > 0; {
			n := min(len(p), 10000) // writes that straddle the pieces
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	})
	base, dir := harness.StartAsync(t, "async_pieces", "wait 50ms")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	res := harness.ResultOf(t, base, loc)
	if !bytes.Equal(res.Body, body) || res.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Fatalf("result: %d bytes, Content-Length %q, want %d", len(res.Body), res.Header.Get("Content-Length"), len(body))
	}
	jobDir := filepath.Join(dir, "processing", "jobs", idOf(t, loc))
	head, err := os.ReadFile(filepath.Join(jobDir, "result"))
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Version int   `json:"version"`
		Size    int64 `json:"size"`
		Pieces  int   `json:"pieces"`
	}
	if err := json.Unmarshal(bytes.TrimSuffix(head, []byte("\n")), &h); err != nil || h.Version != 2 || h.Size != int64(len(body)) || h.Pieces != 5 {
		t.Fatalf("head %s: %v", head, err)
	}
	pieces, _ := filepath.Glob(filepath.Join(jobDir, "body", "*"))
	if len(pieces) != 5 {
		t.Fatalf("%d pieces, want 5", len(pieces))
	}
	for _, p := range pieces {
		if fi, err := os.Stat(p); err != nil || fi.Size() > pieceSize {
			t.Errorf("piece %s: %v, %d bytes", p, err, fi.Size())
		}
	}
	// A piece gone while a reader streams: the response falls short of
	// its Content-Length, which the client reports, rather than ending
	// as if complete.
	if err := os.Remove(filepath.Join(jobDir, "body", "3")); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+loc+"/result", nil)
	cut, err := harness.AsyncClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cut.Body)
	cut.Body.Close()
	if err == nil {
		t.Errorf("a result missing a piece read as complete (%d bytes)", len(got))
	}
}

// TestAsyncConcurrentReadersHoldOnePieceEach: 20 clients fetching one 32 MiB
// result at once. Each reader holds about one piece, so the heap grows by
// a few MiB; the bound is generous (160 MiB, against the 640 MiB of
// loading the result whole for each).
func TestAsyncConcurrentReadersHoldOnePieceEach(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 640 MiB over loopback")
	}
	const size = 32 << 20
	body := bigBody(size)
	want := sha256.Sum256(body)
	harness.SetBehaviour(t, "async_32m", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(100 * time.Millisecond)
		_, err := w.Write(body)
		return err
	})
	base, _ := harness.StartAsync(t, "async_32m", "wait 50ms\n\t\t\tmax_result 64MiB")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	harness.PollUntilDone(t, base, loc)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapInuse
	var peak uint64
	ctx, stop := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			res, err := harness.AsyncClient().Get(base + loc + "/result")
			if err != nil {
				errs <- err.Error()
				return
			}
			defer res.Body.Close()
			h := sha256.New()
			if n, err := io.Copy(h, res.Body); err != nil || n != size || !bytes.Equal(h.Sum(nil), want[:]) {
				errs <- "body: " + strconv.FormatInt(n, 10) + " bytes"
			}
		})
	}
	wg.Wait()
	stop()
	<-sampled
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	grew := int64(peak) - int64(baseline)
	t.Logf("heap in use: %d MiB before, peak %d MiB while 20 readers fetched 32 MiB each (grew %d MiB)", baseline>>20, peak>>20, grew>>20)
	if grew > 160<<20 {
		t.Errorf("the heap grew by %d MiB, want at most 160", grew>>20)
	}
}
