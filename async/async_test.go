package async_test

// Async mode against a real Caddy on loopback: the 202 and the monitor as
// Go's client sees them, the limits, the access checks, the life cycle.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/c055b0d7/caddy-processing"
	"github.com/c055b0d7/caddy-processing/async"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"
)

func storedRecord(t *testing.T, dir, id string) async.JobRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "processing", "jobs", id, "status.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec async.JobRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func idOf(t *testing.T, location string) string {
	t.Helper()
	id := location[strings.LastIndexByte(location, '/')+1:]
	if !async.ValidJobID(id) {
		t.Fatalf("Location %q does not end in a job id", location)
	}
	return id
}

func counterValue(t *testing.T, outcome string) float64 {
	t.Helper()
	var m dto.Metric
	if err := async.AsyncOutcomes.WithLabelValues(outcome).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestAsyncSlowRequestBecomesJob walks the whole flow: 202 with its fields,
// the monitor while running, 303 when done, the result byte for byte.
func TestAsyncSlowRequestBecomesJob(t *testing.T) {
	body := bytes.Repeat([]byte("result\x00\xff"), 1000)
	var sawBody atomic.Value
	harness.SetBehaviour(t, "async_slow", func(w http.ResponseWriter, r *http.Request) error {
		in, _ := io.ReadAll(r.Body)
		sawBody.Store(string(in))
		time.Sleep(1500 * time.Millisecond)
		w.Header().Set("X-Job", "done")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "dropped")
		w.WriteHeader(http.StatusCreated)
		_, err := w.Write(body)
		return err
	})
	base, dir := harness.StartAsync(t, "async_slow", "wait 300ms\n\t\t\trefresh 200ms")
	succeeded := counterValue(t, async.StatusSucceeded)

	start := time.Now()
	loc, res := harness.SubmitAsync(t, base, "POST", "/work?x=1", []byte("the request body"))
	if d := time.Since(start); d < 250*time.Millisecond || d > 1400*time.Millisecond {
		t.Errorf("202 after %v, want about the 300ms wait", d)
	}
	id := idOf(t, loc)
	if want := "/.well-known/processing/jobs/" + id; loc != want {
		t.Errorf("Location %q, want %q", loc, want)
	}
	for field, want := range map[string]string{
		"Preference-Applied": "respond-async", "Retry-After": "1", "Vary": "Prefer",
		"Content-Type": "application/json", "Cache-Control": "no-store",
	} {
		if got := res.Header.Get(field); got != want {
			t.Errorf("202 %s: %q, want %q", field, got, want)
		}
	}
	st := res.JSON(t)
	if st.ID != id || st.Status != async.StatusRunning {
		t.Errorf("202 body %+v", st)
	}

	running := harness.AsyncDo(t, "GET", base+loc, nil)
	if running.Status != 200 || running.JSON(t).Status != async.StatusRunning || running.Header.Get("Retry-After") == "" {
		t.Errorf("monitor while running: %d %s Retry-After=%q", running.Status, running.Body, running.Header.Get("Retry-After"))
	}
	head := harness.AsyncDo(t, "HEAD", base+loc, nil)
	// The JSON's elapsed and updated change between two requests, and so
	// may its length: HEAD's Content-Length is that of its own GET.
	if head.Status != 200 || len(head.Body) != 0 || head.Header.Get("Content-Type") != "application/json" || head.Header.Get("Content-Length") == "" || head.Header.Get("Retry-After") == "" {
		t.Errorf("HEAD while running: %d, %d bytes, header %v", head.Status, len(head.Body), head.Header)
	}

	done := harness.PollUntilDone(t, base, loc)
	if done.Status != http.StatusSeeOther || done.Header.Get("Location") != loc+"/result" {
		t.Fatalf("monitor when done: %d Location %q, want 303 to %s/result", done.Status, done.Header.Get("Location"), loc)
	}
	ds := done.JSON(t)
	if ds.Status != async.StatusSucceeded || ds.Elapsed < 1.4 || ds.Elapsed > 10 {
		t.Errorf("status when done: %+v", ds)
	}
	result := harness.AsyncDo(t, "GET", base+loc+"/result", nil)
	if result.Status != http.StatusCreated || !bytes.Equal(result.Body, body) {
		t.Fatalf("result: %d, %d bytes (want 201, %d bytes)", result.Status, len(result.Body), len(body))
	}
	if result.Header.Get("X-Job") != "done" || result.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("result header lost fields: %v", result.Header)
	}
	if result.Header.Get("X-Hop") != "" || result.Header.Get("Connection") == "X-Hop" {
		t.Errorf("result header kept hop-by-hop fields: %v", result.Header)
	}
	if got, _ := sawBody.Load().(string); got != "the request body" {
		t.Errorf("handler read body %q", got)
	}
	if got := harness.JobFolders(t, dir); len(got) != 1 || got[0] != id {
		t.Errorf("job folders %v, want [%s]", got, id)
	}
	rec := storedRecord(t, dir, id)
	if rec.Status != async.StatusSucceeded || rec.Method != "POST" || rec.Path != "/work" || rec.Auth != "" {
		t.Errorf("stored record %+v", rec)
	}
	// The instance counts the outcome once it has recorded it, so a
	// client can see the job done a moment before the counter moves.
	harness.Eventually(t, "the succeeded counter to move", func() bool {
		return counterValue(t, async.StatusSucceeded)-succeeded >= 1
	})
	if got := counterValue(t, async.StatusSucceeded) - succeeded; got != 1 {
		t.Errorf("succeeded counter moved by %v, want 1", got)
	}
}

// TestAsyncFastJobAnsweredDirectly: a job done within wait gets its real
// response, and nothing is stored.
func TestAsyncFastJobAnsweredDirectly(t *testing.T) {
	harness.SetBehaviour(t, "async_fast", func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("Prefer") != "" {
			return fmt.Errorf("the handler saw Prefer %q", r.Header.Get("Prefer"))
		}
		w.Header().Set("X-Fast", "1")
		w.WriteHeader(http.StatusTeapot)
		_, err := io.WriteString(w, "short and stout")
		return err
	})
	base, dir := harness.StartAsync(t, "async_fast", "wait 5s")
	res := harness.AsyncDo(t, "GET", base+"/x", nil, "Prefer", "respond-async")
	if res.Status != http.StatusTeapot || string(res.Body) != "short and stout" || res.Header.Get("X-Fast") != "1" {
		t.Fatalf("got %d %q %v", res.Status, res.Body, res.Header)
	}
	if res.Header.Get("Vary") != "Prefer" || res.Header.Get("Preference-Applied") != "" || res.Header.Get("Content-Length") != "15" {
		t.Errorf("direct answer header: %v", res.Header)
	}
	if got := harness.JobFolders(t, dir); len(got) != 0 {
		t.Errorf("stored %v for a direct answer", got)
	}
}

// TestAsyncPreferHandling: the wait preference lowers wait; a malformed
// Prefer counts as absent; a wait that is not a number is ignored; no Prefer
// at all serves the request as without async.
func TestAsyncPreferHandling(t *testing.T) {
	harness.SetBehaviour(t, "async_2s", harness.SleepThen(2*time.Second, "slept"))
	base, _ := harness.StartAsync(t, "async_2s", "wait 10s")
	cases := []struct {
		prefer   string
		want     int
		min, max time.Duration
	}{
		{"respond-async, wait=1", 202, 800 * time.Millisecond, 1900 * time.Millisecond},
		{"wait=1; x, RESPOND-ASYNC", 202, 800 * time.Millisecond, 1900 * time.Millisecond},
		{"respond-async, wait=soon", 200, 1900 * time.Millisecond, 9 * time.Second},
		{"respond-async, wait=", 200, 1900 * time.Millisecond, 9 * time.Second}, // malformed: absent
		{"respond-async,,\"x\"", 200, 1900 * time.Millisecond, 9 * time.Second}, // malformed: absent
		{"", 200, 1900 * time.Millisecond, 9 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.prefer, func(t *testing.T) {
			var hdr []string
			if c.prefer != "" {
				hdr = []string{"Prefer", c.prefer}
			}
			start := time.Now()
			res := harness.AsyncDo(t, "GET", base+"/", nil, hdr...)
			d := time.Since(start)
			if res.Status != c.want || d < c.min || d > c.max {
				t.Errorf("Prefer %q: %d after %v, want %d within [%v, %v]", c.prefer, res.Status, d, c.want, c.min, c.max)
			}
			if c.want == 200 && (string(res.Body) != "slept" || res.Header.Get("Preference-Applied") != "") {
				t.Errorf("Prefer %q: body %q, Preference-Applied %q", c.prefer, res.Body, res.Header.Get("Preference-Applied"))
			}
		})
	}
}

// TestAsyncDeleteDuringJob: DELETE cancels the handler's context, answers
// 204, and the job is gone.
func TestAsyncDeleteDuringJob(t *testing.T) {
	canceled := make(chan error, 1)
	harness.SetBehaviour(t, "async_cancel", func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-r.Context().Done():
			canceled <- context.Cause(r.Context())
			return r.Context().Err()
		case <-time.After(30 * time.Second):
			canceled <- nil
			return nil
		}
	})
	base, dir := harness.StartAsync(t, "async_cancel", "wait 100ms")
	loc, _ := harness.SubmitAsync(t, base, "PUT", "/thing", []byte("x"))
	res := harness.AsyncDo(t, "DELETE", base+loc, nil)
	if res.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %q", res.Status, res.Body)
	}
	select {
	case cause := <-canceled:
		if !errors.Is(cause, async.ErrDeleted) {
			t.Errorf("handler's context cause %v, want %v", cause, async.ErrDeleted)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never saw its context cancelled")
	}
	for _, p := range []string{loc, loc + "/result"} {
		if got := harness.AsyncDo(t, "GET", base+p, nil); got.Status != 404 {
			t.Errorf("GET %s after DELETE: %d", p, got.Status)
		}
	}
	harness.Eventually(t, "the job folder to go", func() bool { return len(harness.JobFolders(t, dir)) == 0 })
	if got := harness.AsyncDo(t, "DELETE", base+loc, nil); got.Status != 404 {
		t.Errorf("second DELETE: %d", got.Status)
	}
}

// TestAsyncAccessChecks: a job submitted with Authorization answers only
// that Authorization; malformed and unknown ids, and the monitor itself,
// answer the same 404.
func TestAsyncAccessChecks(t *testing.T) {
	harness.SetBehaviour(t, "async_secret", harness.SleepThen(400*time.Millisecond, "secret"))
	base, dir := harness.StartAsync(t, "async_secret", "wait 50ms")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil, "Authorization", "Bearer alice")
	id := idOf(t, loc)
	harness.PollUntilDone(t, base, loc, "Authorization", "Bearer alice")
	notFound := harness.AsyncDo(t, "GET", base+"/.well-known/processing/jobs/"+strings.Repeat("A", async.JobIDLen), nil)
	if notFound.Status != 404 {
		t.Fatalf("unknown id: %d", notFound.Status)
	}
	for _, c := range []struct {
		name, method, path string
		header             []string
	}{
		{"no Authorization", "GET", loc, nil},
		{"other Authorization", "GET", loc, []string{"Authorization", "Bearer mallory"}},
		{"case differs", "GET", loc, []string{"Authorization", "bearer alice"}},
		{"result, no Authorization", "GET", loc + "/result", nil},
		{"result, other Authorization", "GET", loc + "/result", []string{"Authorization", "Bearer bob"}},
		{"DELETE, other Authorization", "DELETE", loc, []string{"Authorization", "Bearer bob"}},
		{"short id", "GET", "/.well-known/processing/jobs/abc", nil},
		{"long id", "GET", loc + "A", nil},
		{"id with a dot", "GET", "/.well-known/processing/jobs/" + id[:async.JobIDLen-2] + "..", nil},
		{"id with a percent", "GET", "/.well-known/processing/jobs/" + id[:async.JobIDLen-3] + "%2F", nil},
		{"other sub-resource", "GET", loc + "/status", nil},
		{"result with a trailing slash", "GET", loc + "/result/", nil},
		{"the monitor itself", "GET", "/.well-known/processing/jobs", nil},
		{"the monitor with a slash", "GET", "/.well-known/processing/jobs/", nil},
	} {
		got := harness.AsyncDo(t, c.method, base+c.path, nil, c.header...)
		if got.Status != 404 || !bytes.Equal(got.Body, notFound.Body) {
			t.Errorf("%s: %d %q, want the same 404 as an unknown id", c.name, got.Status, got.Body)
		}
	}
	if got := harness.AsyncDo(t, "POST", base+loc, nil, "Authorization", "Bearer alice"); got.Status != 405 || got.Header.Get("Allow") != "GET, HEAD, DELETE" {
		t.Errorf("POST to the monitor: %d Allow %q", got.Status, got.Header.Get("Allow"))
	}
	ok := harness.AsyncDo(t, "GET", base+loc+"/result", nil, "Authorization", "Bearer alice")
	if ok.Status != 200 || string(ok.Body) != "secret" {
		t.Errorf("result with the submitter's Authorization: %d %q", ok.Status, ok.Body)
	}
	rec := storedRecord(t, dir, id)
	if rec.Auth == "" || strings.Contains(rec.Auth, "alice") {
		t.Errorf("stored auth %q: want a hash", rec.Auth)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "processing", "jobs", id, "status.json"))
	if bytes.Contains(b, []byte("alice")) {
		t.Errorf("the record holds the credentials: %s", b)
	}
}

// TestAsyncBasicAuthProtectsMonitor: in the default directive order (no
// route, no order line) basic_auth runs before processing, so it guards the
// monitor like any other path of the site, and a submission it refuses
// creates no job: no record, no body read, no monitor answer.
func TestAsyncBasicAuthProtectsMonitor(t *testing.T) {
	harness.SetBehaviour(t, "async_auth", harness.SleepThen(300*time.Millisecond, "behind auth"))
	dir := harness.StorageDir(t)
	// The lowest bcrypt cost: the default takes seconds under -race.
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	test_work async_auth
	processing {
		async {
			wait 50ms
		}
	}
	basic_auth {
		alice %s
	}
}
`, hash))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	addr := strings.TrimPrefix(base, "http://")
	// Expect: 100-continue shows whether anything read the body: Go's
	// server sends 100 Continue on its first read.
	raw := harness.RawRequest(t, addr, "POST / HTTP/1.1\r\nHost: "+addr+"\r\nPrefer: respond-async, wait=0\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
	if raw.Status != http.StatusUnauthorized || len(raw.Interims) != 0 {
		t.Errorf("submission without credentials: %d after %d interim responses, want 401 and no 100 Continue", raw.Status, len(raw.Interims))
	}
	if got := harness.JobFolders(t, dir); len(got) != 0 {
		t.Errorf("a refused submission stored %v", got)
	}
	auth := "Basic " + "YWxpY2U6c2VjcmV0" // alice:secret
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil, "Authorization", auth)
	for _, p := range []string{loc, loc + "/result"} {
		if got := harness.AsyncDo(t, "GET", base+p, nil); got.Status != http.StatusUnauthorized {
			t.Errorf("monitor without credentials: %d, want 401 from basic_auth", got.Status)
		}
	}
	if got := harness.ResultOf(t, base, loc, "Authorization", auth); string(got.Body) != "behind auth" {
		t.Errorf("result: %d %q", got.Status, got.Body)
	}
}

// TestAsyncFloodPastMaxJobs: beyond max_jobs, 503 with Retry-After before
// the body is read, and no job is created.
func TestAsyncFloodPastMaxJobs(t *testing.T) {
	release := make(chan struct{})
	harness.SetBehaviour(t, "async_block", harness.BlockUntil(release))
	base, dir := harness.StartAsync(t, "async_block", "wait 50ms\n\t\t\tmax_jobs 3")
	rejected := counterValue(t, "rejected")
	var locs []string
	for range 3 {
		loc, _ := harness.SubmitAsync(t, base, "POST", "/", []byte("b"))
		locs = append(locs, loc)
	}
	for range 5 {
		res := harness.AsyncDo(t, "POST", base+"/", []byte("b"), "Prefer", "respond-async")
		if res.Status != 503 || res.Header.Get("Retry-After") == "" {
			t.Errorf("past max_jobs: %d Retry-After %q", res.Status, res.Header.Get("Retry-After"))
		}
	}
	// The 503 comes before the body: a client that sends only its header
	// gets its answer.
	addr := strings.TrimPrefix(base, "http://")
	// With Expect: 100-continue, Go's server sends 100 Continue on the
	// first read of the body: none proves the body was never read.
	// The connection then closes at once: Go's server would otherwise
	// read up to 256 KiB of a body that the client never sends while it
	// waits for 100 Continue, until Caddy's read timeout
	// (TestAsyncRefusedExpectContinueClosesAtOnce for larger bodies).
	raw := harness.RawRequest(t, addr, "POST / HTTP/1.1\r\nHost: "+addr+"\r\nPrefer: respond-async\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n", harness.ReadToClose)
	if raw.Status != 503 || len(raw.Interims) != 0 || raw.Header.Get("Retry-After") == "" || raw.Header.Get("Connection") != "close" {
		t.Errorf("raw request past max_jobs: %d after %d interim responses, Retry-After %q, Connection %q", raw.Status, len(raw.Interims), raw.Header.Get("Retry-After"), raw.Header.Get("Connection"))
	}
	if raw.Elapsed > 10*time.Second {
		t.Errorf("the refused connection closed after %v", raw.Elapsed)
	}
	if got := counterValue(t, "rejected") - rejected; got != 6 {
		t.Errorf("rejected counter moved by %v, want 6", got)
	}
	if got := harness.JobFolders(t, dir); len(got) != 3 {
		t.Errorf("%d job folders, want 3", len(got))
	}
	var m dto.Metric
	_ = async.AsyncRunning.Write(&m)
	if m.GetGauge().GetValue() != 3 {
		t.Errorf("running gauge %v, want 3", m.GetGauge().GetValue())
	}
	close(release)
	for _, loc := range locs {
		if done := harness.PollUntilDone(t, base, loc); done.Status != 303 {
			t.Errorf("%s: %d", loc, done.Status)
		}
	}
	// Slots are free again.
	if res := harness.AsyncDo(t, "POST", base+"/", []byte("b"), "Prefer", "respond-async"); res.Status != 200 || string(res.Body) != "released" {
		t.Errorf("after the flood: %d %q", res.Status, res.Body)
	}
}

// TestAsyncBodyLimits: a body over max_body is refused with 413; a body
// larger than the in-memory part goes through a temporary file that is
// removed when the job ends.
func TestAsyncBodyLimits(t *testing.T) {
	harness.SetBehaviour(t, "async_hash", func(w http.ResponseWriter, r *http.Request) error {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		fmt.Fprintf(w, "%d %s %d", n, hex.EncodeToString(h.Sum(nil)), r.ContentLength)
		return nil
	})
	base, _ := harness.StartAsync(t, "async_hash", "wait 50ms\n\t\t\tmax_body 3MiB")
	// Over max_body by its Content-Length: refused before the body is
	// read, so the client need not send it.
	addr := strings.TrimPrefix(base, "http://")
	raw := harness.RawRequest(t, addr, "PUT / HTTP/1.1\r\nHost: "+addr+"\r\nPrefer: respond-async\r\nContent-Length: 3145729\r\nExpect: 100-continue\r\n\r\n")
	if raw.Status != 413 || len(raw.Interims) != 0 {
		t.Errorf("Content-Length over max_body: %d after %d interim responses, want 413 and no 100 Continue", raw.Status, len(raw.Interims))
	}
	// Over max_body by counting: a chunked body one byte too long.
	conn, err := harness.DialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "PUT / HTTP/1.1\r\nHost: "+addr+"\r\nPrefer: respond-async\r\nTransfer-Encoding: chunked\r\n\r\n")
	go func() {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 3 {
			fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk)
		}
		io.WriteString(conn, "1\r\ny\r\n0\r\n\r\n")
	}()
	counted, err := harness.ReadRawResponse(bufio.NewReader(conn), start, false)
	if err != nil || counted.Status != 413 {
		t.Errorf("chunked body over max_body: %d %v", counted.Status, err)
	}
	// This process's body folder (bodydir.go).
	bodies := filepath.Join(os.TempDir(), fmt.Sprintf("caddy-processing-%d", os.Getpid()), "body-*")
	tmpBefore, _ := filepath.Glob(bodies)
	body := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16+3)
	loc, _ := harness.SubmitAsync(t, base, "PUT", "/", body)
	tmpDuring, _ := filepath.Glob(bodies)
	if len(tmpDuring) != len(tmpBefore)+1 {
		t.Errorf("%d body files while the job runs, want %d", len(tmpDuring), len(tmpBefore)+1)
	}
	sum := sha256.Sum256(body)
	want := fmt.Sprintf("%d %s %d", len(body), hex.EncodeToString(sum[:]), len(body))
	if res := harness.ResultOf(t, base, loc); string(res.Body) != want {
		t.Errorf("result %q, want %q", res.Body, want)
	}
	tmpAfter, _ := filepath.Glob(bodies)
	if len(tmpAfter) != len(tmpBefore) {
		t.Errorf("%d body files after the job, want %d", len(tmpAfter), len(tmpBefore))
	}
}

// TestAsyncResultOverMaxResultFails: the job fails with that reason and no
// partial result is visible.
func TestAsyncResultOverMaxResultFails(t *testing.T) {
	harness.SetBehaviour(t, "async_big", func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(200 * time.Millisecond)
		for range 8 {
			if _, err := w.Write(make([]byte, 512)); err != nil {
				return err
			}
		}
		return nil
	})
	base, dir := harness.StartAsync(t, "async_big", "wait 50ms\n\t\t\tmax_result 1KiB")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	done := harness.PollUntilDone(t, base, loc)
	st := done.JSON(t)
	if done.Status != 200 || st.Status != async.StatusFailed || !strings.Contains(st.Reason, "max_result") {
		t.Errorf("status: %d %+v", done.Status, st)
	}
	if res := harness.AsyncDo(t, "GET", base+loc+"/result", nil); res.Status != 404 {
		t.Errorf("result of a failed job: %d", res.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, "processing", "jobs", idOf(t, loc), "result")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a result was stored: %v", err)
	}
}

// TestAsyncExpiry: after keep, 404, and the sweep deletes the job.
func TestAsyncExpiry(t *testing.T) {
	harness.SetBehaviour(t, "async_keep", harness.SleepThen(200*time.Millisecond, "kept briefly"))
	base, dir := harness.StartAsync(t, "async_keep", "wait 50ms\n\t\t\tkeep 1s")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	res := harness.ResultOf(t, base, loc)
	ended := time.Now()
	if string(res.Body) != "kept briefly" {
		t.Fatalf("result within keep: %d %q", res.Status, res.Body)
	}
	time.Sleep(time.Until(ended.Add(1100 * time.Millisecond)))
	for _, p := range []string{loc, loc + "/result"} {
		if res := harness.AsyncDo(t, "GET", base+p, nil); res.Status != 404 {
			t.Errorf("GET %s after keep: %d", p, res.Status)
		}
	}
	// The sweep runs every keep/4 (at least 250ms).
	harness.Eventually(t, "the sweep to delete the expired job", func() bool { return len(harness.JobFolders(t, dir)) == 0 })
}

// TestAsyncStorageFailure: a storage that cannot be written answers 500
// and no job runs on.
func TestAsyncStorageFailure(t *testing.T) {
	ran := make(chan error, 1)
	harness.SetBehaviour(t, "async_storage", func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-time.After(2 * time.Second):
			ran <- nil
		case <-r.Context().Done():
			ran <- context.Cause(r.Context())
		}
		return nil
	})
	base, dir := harness.StartAsync(t, "async_storage", "wait 50ms")
	// A file where the module's folder would be: every Store fails.
	if err := os.WriteFile(filepath.Join(dir, "processing"), []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := harness.AsyncDo(t, "POST", base+"/", nil, "Prefer", "respond-async")
	if res.Status != 500 {
		t.Errorf("with a broken storage: %d %q", res.Status, res.Body)
	}
	select {
	case cause := <-ran:
		if cause == nil || !strings.Contains(cause.Error(), "storage") {
			t.Errorf("the job was not cancelled for the storage failure: %v", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the job never ended")
	}
}

// TestAsyncStopCancelsJobs: caddy stop cancels running jobs, which report
// canceled; TestAsyncSurvivesReload: a reload does not.
func TestAsyncStopCancelsJobs(t *testing.T) {
	harness.SetBehaviour(t, "async_forever", harness.SleepThen(time.Minute, "never"))
	base, dir := harness.StartAsync(t, "async_forever", "wait 50ms")
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	canceled := counterValue(t, async.StatusCanceled)
	harness.CloseClientConnections()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	rec := storedRecord(t, dir, idOf(t, loc))
	if rec.Status != async.StatusCanceled || rec.Reason != async.ErrShutdown.Error() {
		t.Errorf("record after stop: %+v", rec)
	}
	if got := counterValue(t, async.StatusCanceled) - canceled; got != 1 {
		t.Errorf("canceled counter moved by %v", got)
	}
}

func TestAsyncSurvivesReload(t *testing.T) {
	harness.SetBehaviour(t, "async_reload", harness.SleepThen(1500*time.Millisecond, "from the old config"))
	dir := harness.StorageDir(t)
	port := harness.FreePort(t)
	load := func(response string) {
		site := fmt.Sprintf(`
http://127.0.0.1:%d {
	processing {
		async {
			wait 50ms
		}
	}
	respond /new %q
	test_work async_reload
}
`, port, response)
		if err := caddy.Load(harness.Adapt(t, harness.AsyncGlobal(dir, "")+site), true); err != nil {
			t.Fatal(err)
		}
	}
	load("first")
	t.Cleanup(func() {
		harness.CloseClientConnections()
		_ = caddy.Stop()
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	load("second")
	// A connection the old server accepted while it shut down may be
	// closed unanswered: retry until the new config answers.
	harness.Eventually(t, "the new config to answer", func() bool {
		res, err := harness.AsyncClient().Get(base + "/new")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b) == "second"
	})
	if res := harness.ResultOf(t, base, loc); string(res.Body) != "from the old config" {
		t.Errorf("result: %d %q", res.Status, res.Body)
	}
}

// TestAsyncAdminListsRunningJobs: admin.api.processing lists id, method,
// path and elapsed of the jobs running here, and nothing once they ended.
func TestAsyncAdminListsRunningJobs(t *testing.T) {
	release := make(chan struct{})
	harness.SetBehaviour(t, "async_admin", harness.BlockUntil(release))
	dir := harness.StorageDir(t)
	adminPort := harness.FreePort(t)
	global := strings.Replace(harness.AsyncGlobal(dir, ""), "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	port, _ := harness.StartCaddyGlobal(t, global, harness.AsyncSite("async_admin", "wait 50ms"))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "PATCH", "/some/where?q=1", []byte("x"))
	time.Sleep(100 * time.Millisecond)
	res := harness.AsyncDo(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/processing/jobs", adminPort), nil)
	var list []async.RunningJob
	if err := json.Unmarshal(res.Body, &list); err != nil || res.Status != 200 {
		t.Fatalf("admin: %d %q %v", res.Status, res.Body, err)
	}
	if len(list) != 1 || list[0].ID != idOf(t, loc) || list[0].Method != "PATCH" || list[0].Path != "/some/where" || list[0].Elapsed < 0.1 {
		t.Errorf("admin listing %+v", list)
	}
	close(release)
	harness.PollUntilDone(t, base, loc)
	harness.Eventually(t, "an empty listing", func() bool {
		res := harness.AsyncDo(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/processing/jobs", adminPort), nil)
		return strings.TrimSpace(string(res.Body)) == "[]"
	})
}

// TestAsyncDetachedRequestSharesNothing: the job's handlers write the
// variable table while the submitting request's access log reads its own;
// under -race a shared map would be reported.
func TestAsyncDetachedRequestSharesNothing(t *testing.T) {
	harness.SetBehaviour(t, "async_vars", func(w http.ResponseWriter, r *http.Request) error {
		for i := range 200 {
			caddyhttp.SetVar(r.Context(), "job_var", i)
			time.Sleep(time.Millisecond)
		}
		_, err := io.WriteString(w, fmt.Sprintf("vars %v %d", caddyhttp.GetVar(r.Context(), "before_processing"), 200))
		return err
	})
	dir := harness.StorageDir(t)
	logFile := filepath.Join(t.TempDir(), "access.log")
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	log {
		output file %s
	}
	vars before_processing yes
	log_append job_var {http.vars.job_var}
	log_append interim_count {http.vars.processing.interim_count}
	processing {
		async {
			wait 20ms
		}
	}
	test_work async_vars
}
`, logFile))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var locs []string
	for range 5 {
		loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
		locs = append(locs, loc)
	}
	for _, loc := range locs {
		if res := harness.ResultOf(t, base, loc); string(res.Body) != "vars yes 200" {
			t.Errorf("result %q", res.Body)
		}
	}
	// The submissions' access log entries: 202, no 102 sent, and none of
	// the job's variables, which went to the job's own table.
	var submissions int
	harness.Eventually(t, "five submissions in the access log", func() bool {
		b, _ := os.ReadFile(logFile)
		submissions = 0
		for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			var entry struct {
				Status       int `json:"status"`
				JobVar       any `json:"job_var"`
				InterimCount any `json:"interim_count"`
			}
			if json.Unmarshal([]byte(line), &entry) != nil || entry.Status != http.StatusAccepted {
				continue
			}
			submissions++
			if n, ok := entry.InterimCount.(float64); !ok || n != 0 {
				t.Fatalf("a submission logged interim_count %#v, want the number 0: %s", entry.InterimCount, line)
			}
			if _, isNumber := entry.JobVar.(float64); isNumber {
				t.Fatalf("a submission's log saw the job's variable: %s", line)
			}
		}
		return submissions == 5
	})
}

// TestAsyncHandlerFailures: a panic or an error in the job's handlers
// fails the job with its reason (and, when answered directly, goes to
// Caddy's error handling as it would without async); the server stays up.
func TestAsyncHandlerFailures(t *testing.T) {
	harness.SetBehaviour(t, "async_fail", func(w http.ResponseWriter, r *http.Request) error {
		d, _ := time.ParseDuration(r.URL.Query().Get("after"))
		time.Sleep(d)
		switch r.URL.Path {
		case "/panic":
			panic("the handler gave up")
		case "/error":
			return caddyhttp.Error(http.StatusBadGateway, errors.New("upstream gone"))
		}
		return nil
	})
	base, _ := harness.StartAsync(t, "async_fail", "wait 300ms")
	for _, c := range []struct {
		path, reason string
		direct       int
	}{
		{"/panic", "a handler panicked", 500},
		{"/error", "handler error: 502 Bad Gateway", 502},
	} {
		if res := harness.AsyncDo(t, "GET", base+c.path+"?after=0s", nil, "Prefer", "respond-async"); res.Status != c.direct {
			t.Errorf("%s answered directly: %d, want %d", c.path, res.Status, c.direct)
		}
		loc, _ := harness.SubmitAsync(t, base, "GET", c.path+"?after=600ms", nil)
		done := harness.PollUntilDone(t, base, loc)
		if st := done.JSON(t); done.Status != 200 || st.Status != async.StatusFailed || st.Reason != c.reason {
			t.Errorf("%s as a job: %d %+v, want failed %q", c.path, done.Status, st, c.reason)
		}
	}
	if res := harness.AsyncDo(t, "GET", base+"/fine", nil); res.Status != 200 {
		t.Errorf("after the failures: %d", res.Status)
	}
}

// TestAsyncUpstreamInterimsIgnored: reverse_proxy forwards an upstream's
// 1xx from its transport's goroutine; the job's recorder drops them, under
// -race, and records the final response alone.
func TestAsyncUpstreamInterimsIgnored(t *testing.T) {
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 5 {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			time.Sleep(100 * time.Millisecond)
		}
		w.Header().Del("Link")
		w.Header().Set("X-Upstream", "final")
		io.WriteString(w, "after hints")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go upstream.Serve(ln)
	t.Cleanup(func() { upstream.Close() })
	dir := harness.StorageDir(t)
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	processing {
		async {
			wait 100ms
		}
	}
	reverse_proxy %s
}
`, ln.Addr()))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	loc, _ := harness.SubmitAsync(t, base, "GET", "/", nil)
	res := harness.ResultOf(t, base, loc)
	if res.Status != 200 || string(res.Body) != "after hints" || res.Header.Get("X-Upstream") != "final" || res.Header.Get("Link") != "" {
		t.Errorf("result: %d %q %v", res.Status, res.Body, res.Header)
	}
}
