package async_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// cookieJob is a behaviour that works a while, then sets a cookie and
// answers "mine".
func cookieJob(w http.ResponseWriter, r *http.Request) error {
	time.Sleep(300 * time.Millisecond)
	http.SetCookie(w, &http.Cookie{Name: "token", Value: "t0ken"})
	_, err := w.Write([]byte("mine"))
	return err
}

// TestAsyncBindCookie: with `bind {http.request.cookie.session}`, a job
// submitted with the cookie session=a is a 404 to session=b and to a
// request without the cookie, on the monitor and the result alike, and is
// served with its Set-Cookie to session=a.
func TestAsyncBindCookie(t *testing.T) {
	harness.SetBehaviour(t, "async_cookie", cookieJob)
	base, _ := harness.StartAsync(t, "async_cookie", "wait 50ms\n\t\t\tbind {http.request.cookie.session}")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/", []byte("x"), "Cookie", "session=a")
	harness.PollUntilDone(t, base, loc, "Cookie", "session=a")
	unknown := harness.AsyncDo(t, "GET", base+"/.well-known/processing/jobs/"+harness.IDOf(loc)[:12]+harness.IDOf(loc)[:12], nil)
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"session=b", []string{"Cookie", "session=b"}},
		{"no cookie", nil},
		{"another cookie only", []string{"Cookie", "other=a"}},
	} {
		for _, p := range []string{loc, loc + "/result"} {
			got := harness.AsyncDo(t, "GET", base+p, nil, c.header...)
			if got.Status != http.StatusNotFound || !bytes.Equal(got.Body, unknown.Body) {
				t.Errorf("%s, %s: %d %q, want the 404 of an unknown id", c.name, p, got.Status, got.Body)
			}
		}
	}
	res := harness.ResultOf(t, base, loc, "Cookie", "session=a; other=b")
	if res.Status != 200 || string(res.Body) != "mine" || res.Header.Get("Set-Cookie") != "token=t0ken" {
		t.Errorf("result to session=a: %d %q Set-Cookie %q", res.Status, res.Body, res.Header.Get("Set-Cookie"))
	}
}

// TestAsyncUnboundResultHasNoSetCookie: a job whose submitter sent neither
// Authorization nor a bind value is served to anyone holding its id, but
// its stored result carries no Set-Cookie.
func TestAsyncUnboundResultHasNoSetCookie(t *testing.T) {
	harness.SetBehaviour(t, "async_cookie", cookieJob)
	base, _ := harness.StartAsync(t, "async_cookie", "wait 50ms\n\t\t\tbind {http.request.cookie.session}")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/", []byte("x"))
	res := harness.ResultOf(t, base, loc, "Cookie", "session=z")
	if res.Status != 200 || string(res.Body) != "mine" || len(res.Header.Values("Set-Cookie")) != 0 {
		t.Errorf("unbound result: %d %q Set-Cookie %q", res.Status, res.Body, res.Header.Values("Set-Cookie"))
	}
}

// TestAsyncAccessLogFilterHidesIDs: the log filter docs/async.md gives
// keeps job ids out of Caddy's access log, where they would otherwise be
// in the 202's Location and in every monitor request's URI.
func TestAsyncAccessLogFilterHidesIDs(t *testing.T) {
	harness.SetBehaviour(t, "async_logged", harness.SleepThen(200*time.Millisecond, "logged"))
	dir := harness.StorageDir(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	log {
		output file %s
		format filter {
			request>uri regexp "^(/\.well-known/processing/jobs/)[^/?]+" "${1}-"
			resp_headers>Location delete
		}
	}
	processing {
		async {
			wait 50ms
		}
	}
	test_work async_logged
}
`, logFile))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "POST", "/", []byte("x"))
	if res := harness.ResultOf(t, base, loc); string(res.Body) != "logged" {
		t.Fatalf("result %d %q", res.Status, res.Body)
	}
	id := harness.IDOf(loc)
	var entries []map[string]any
	harness.Eventually(t, "the access log to hold the result's request", func() bool {
		entries = harness.ReadJSONLines(t, logFile)
		b, _ := os.ReadFile(logFile)
		return bytes.Contains(b, []byte(`/.well-known/processing/jobs/-/result`))
	})
	b, _ := os.ReadFile(logFile)
	if bytes.Contains(b, []byte(id)) {
		t.Errorf("the access log holds the job id:\n%s", b)
	}
	if len(entries) < 3 {
		t.Errorf("%d access log entries, want the submission and each monitor request", len(entries))
	}
}
