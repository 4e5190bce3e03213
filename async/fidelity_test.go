package async_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// TestAsyncHeadKeepsContentLength: a HEAD answered within wait, and the
// result of a HEAD job, announce the Content-Length the handler set, as
// the same request without Prefer gets.
func TestAsyncHeadKeepsContentLength(t *testing.T) {
	var delay atomicDuration
	harness.SetBehaviour(t, "async_head", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(delay.get())
		w.Header().Set("Content-Length", "5000")
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.Method != http.MethodHead {
			_, err := w.Write(make([]byte, 5000))
			return err
		}
		return nil
	})
	base, _ := harness.StartAsync(t, "async_head", "wait 1s")
	plain := harness.AsyncDo(t, "HEAD", base+"/file", nil)
	direct := harness.AsyncDo(t, "HEAD", base+"/file", nil, "Prefer", "respond-async")
	if plain.Header.Get("Content-Length") != "5000" || direct.Status != 200 || direct.Header.Get("Content-Length") != "5000" {
		t.Errorf("HEAD without Prefer: Content-Length %q; within wait: %d Content-Length %q, want 5000",
			plain.Header.Get("Content-Length"), direct.Status, direct.Header.Get("Content-Length"))
	}
	delay.set(1500 * time.Millisecond)
	loc, _ := harness.SubmitAsync(t, base, "HEAD", "/file", nil)
	harness.PollUntilDone(t, base, loc)
	res := harness.AsyncDo(t, "HEAD", base+loc+"/result", nil)
	if res.Status != 200 || res.Header.Get("Content-Length") != "5000" {
		t.Errorf("HEAD of a HEAD job's result: %d Content-Length %q, want 5000", res.Status, res.Header.Get("Content-Length"))
	}
}

// TestAsyncRelativeReferencesResolved: a relative Location or
// Content-Location is stored resolved against the submitted request's
// URL, not left to resolve against the monitor's.
func TestAsyncRelativeReferencesResolved(t *testing.T) {
	harness.SetBehaviour(t, "async_create", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(200 * time.Millisecond)
		w.Header().Set("Location", "items/42")
		w.Header().Set("Content-Location", "../view?x=1")
		w.Header().Add("Link", "<items/42>; rel=self") // not a reference field this module rewrites
		w.WriteHeader(http.StatusCreated)
		return nil
	})
	base, _ := harness.StartAsync(t, "async_create", "wait 50ms")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/api/create?draft=1", []byte("{}"))
	res := harness.ResultOf(t, base, loc)
	if res.Status != http.StatusCreated || res.Header.Get("Location") != "/api/items/42" || res.Header.Get("Content-Location") != "/view?x=1" {
		t.Errorf("result: %d Location %q Content-Location %q, want /api/items/42 and /view?x=1",
			res.Status, res.Header.Get("Location"), res.Header.Get("Content-Location"))
	}
}

// TestAsyncUnappliedPreferencesReachHandlers: the module takes out of
// Prefer only what it applied (respond-async, wait); the handlers get the
// rest as the client wrote it.
func TestAsyncUnappliedPreferencesReachHandlers(t *testing.T) {
	harness.SetBehaviour(t, "async_prefer", func(w http.ResponseWriter, r *http.Request) error {
		_, err := io.WriteString(w, strings.Join(r.Header.Values("Prefer"), " | "))
		return err
	})
	base, _ := harness.StartAsync(t, "async_prefer", "wait 5s")
	for _, c := range []struct{ prefer, want string }{
		{"respond-async, return=minimal, handling=lenient", "return=minimal, handling=lenient"},
		{"respond-async, wait=3", ""},
		{"handling=strict; x=\"a,b\", Respond-Async", "handling=strict; x=\"a,b\""},
	} {
		res := harness.AsyncDo(t, "POST", base+"/", nil, "Prefer", c.prefer)
		if res.Status != 200 || string(res.Body) != c.want {
			t.Errorf("Prefer %q: %d, the handler saw %q, want %q", c.prefer, res.Status, res.Body, c.want)
		}
	}
}

// TestAsyncJobReplacerSeesItsResponse: the job's handlers get a replacer
// bound to the job's own response, so a deferred header operation's
// {http.response.header.*} reads what the job's handler set.
func TestAsyncJobReplacerSeesItsResponse(t *testing.T) {
	harness.SetBehaviour(t, "async_repl", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(200 * time.Millisecond)
		w.Header().Set("X-Job", "42")
		_, err := io.WriteString(w, "done")
		return err
	})
	dir := harness.StorageDir(t)
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), `
http://127.0.0.1:{PORT} {
	route {
		processing {
			async {
				wait 50ms
			}
		}
		header {
			X-Copy "job {http.response.header.X-Job} for {http.request.uri.path}"
			defer
		}
		test_work async_repl
	}
}
`)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "POST", "/convert", []byte("x"))
	res := harness.ResultOf(t, base, loc)
	if got := res.Header.Get("X-Copy"); got != "job 42 for /convert" {
		t.Errorf("X-Copy %q, want %q", got, "job 42 for /convert")
	}
}
