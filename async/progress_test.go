package async_test

// Progress end to end (progress.go, sse.go, events.go) against a real
// Caddy: a client waiting with `Prefer: processing` gets 102s with the
// status document's Location and the latest Progress, then its response;
// one that leaves finds the result at that Location; the monitor streams
// events and answers with 102s; the job's life is emitted as Caddy events.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/async"
	"github.com/c055b0d7/caddy-processing/internal/harness"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// progressSite runs the behaviour name behind processing with a short
// interval and async mode, with a field set before processing that no 102
// may carry.
func progressSite(t *testing.T, name, asyncLines, extraGlobal string) (base, dir string, port int) {
	t.Helper()
	dir = harness.StorageDir(t)
	port, _ = harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, extraGlobal), fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	header X-Before "set before processing"
	processing {
		interval 150ms
		async {
			%s
		}
	}
	test_work %s
}
`, asyncLines, name))
	return fmt.Sprintf("http://127.0.0.1:%d", port), dir, port
}

// steppedJob is a behaviour that reports Progress on 102s of its own and
// waits for the test between steps: it sends each value of steps[i] as a
// 102, then waits on release, for each i, and finally answers 201.
type steppedJob struct {
	steps   [][]string
	release chan struct{}
	started chan struct{}
}

func newSteppedJob(steps ...[]string) *steppedJob {
	return &steppedJob{steps: steps, release: make(chan struct{}), started: make(chan struct{}, 1)}
}

func (s *steppedJob) serve(w http.ResponseWriter, r *http.Request) error {
	select {
	case s.started <- struct{}{}:
	default:
	}
	w.Header().Set("X-Handler", "only on the final response")
	for _, step := range s.steps {
		for _, v := range step {
			w.Header().Set("Progress", v)
			w.WriteHeader(http.StatusProcessing)
		}
		w.Header().Del("Progress")
		select {
		case <-s.release:
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusCreated)
	_, err := io.WriteString(w, "the job's answer")
	return err
}

// interimWatch records the 1xx a Go client sees, and lets the test wait for
// one that satisfies a condition.
type interimWatch struct {
	mu   sync.Mutex
	seen []http.Header
	more chan struct{}
}

func newInterimWatch() *interimWatch { return &interimWatch{more: make(chan struct{}, 1000)} }

func (iw *interimWatch) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			if code == http.StatusProcessing {
				iw.mu.Lock()
				iw.seen = append(iw.seen, http.Header(h).Clone())
				iw.mu.Unlock()
				iw.more <- struct{}{}
			}
			return nil
		},
	})
}

func (iw *interimWatch) all() []http.Header {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	return append([]http.Header(nil), iw.seen...)
}

// waitFor waits until some 102 satisfies cond and returns it.
func (iw *interimWatch) waitFor(t *testing.T, what string, cond func(http.Header) bool) http.Header {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		for _, h := range iw.all() {
			if cond(h) {
				return h
			}
		}
		select {
		case <-iw.more:
		case <-deadline:
			t.Fatalf("no 102 with %s; saw %v", what, iw.all())
		}
	}
}

type doneResponse struct {
	status int
	header http.Header
	body   string
	err    error
}

// goTraced sends a request on its own goroutine with a Go client that
// records its 102s.
func goTraced(t *testing.T, client *http.Client, method, url string, header ...string) (*interimWatch, <-chan doneResponse) {
	t.Helper()
	iw := newInterimWatch()
	req, err := http.NewRequestWithContext(iw.trace(harness.WithTimeout(t, 60*time.Second)), method, url, strings.NewReader("job input"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	done := make(chan doneResponse, 1)
	go func() {
		res, err := client.Do(req)
		if err != nil {
			done <- doneResponse{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		done <- doneResponse{res.StatusCode, res.Header, string(b), err}
	}()
	return iw, done
}

func (iw *interimWatch) location(t *testing.T) string {
	t.Helper()
	first := iw.waitFor(t, "Location", func(h http.Header) bool { return len(h) > 0 })
	return first.Get("Location")
}

// checkOnlyFields fails if a 102 carries other fields than allowed.
func checkOnlyFields(t *testing.T, interims []http.Header, allowed ...string) {
	t.Helper()
	for i, h := range interims {
		for name := range h {
			ok := false
			for _, a := range allowed {
				ok = ok || name == a
			}
			if !ok {
				t.Errorf("102 number %d carries %s: %v", i+1, name, h)
			}
		}
	}
}

// TestProcessingRequestWaitsWithLocationAndProgress: a request with
// `Prefer: processing` still running at wait becomes a job whose client
// keeps waiting: the first 102 carries the Location, later ones the latest
// valid Progress, and the final response is the job's; it stays stored.
func TestProcessingRequestWaitsWithLocationAndProgress(t *testing.T) {
	job := newSteppedJob(
		[]string{`1/3 "first"`},
		[]string{`2/3 "second"`, "5/3 (not allowed: the denominator is smaller)", "garbage"},
	)
	harness.SetBehaviour(t, "progress_wait", job.serve)
	base, dir, _ := progressSite(t, "progress_wait", "wait 300ms\n\t\t\trefresh 100ms", "")

	for _, proto := range []string{"HTTP/1.1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			client := harness.AsyncClient()
			if proto == "h2c" {
				client = harness.H2CClient()
			}
			start := time.Now()
			iw, done := goTraced(t, client, "POST", base+"/convert", "Prefer", "processing")
			loc := iw.location(t)
			if d := time.Since(start); d < 250*time.Millisecond {
				t.Errorf("first 102 after %v, before wait", d)
			}
			id := idOf(t, loc)
			if want := "/.well-known/processing/jobs/" + id; loc != want {
				t.Errorf("Location %q, want %q", loc, want)
			}
			if first := iw.all()[0]; first.Get("Progress") != `1/3 "first"` {
				t.Errorf("first 102: %v, want Progress 1/3 \"first\"", first)
			}
			// The job is in storage, with its progress, while the
			// client still waits.
			st := harness.AsyncDo(t, "GET", base+loc, nil)
			if st.Status != 200 || st.JSON(t).Status != async.StatusRunning || !strings.Contains(string(st.Body), `"progress":"1/3 \"first\""`) {
				t.Errorf("monitor while waiting: %d %s", st.Status, st.Body)
			}
			// The interval goes on with the same progress.
			n := len(iw.all())
			iw.waitFor(t, "a later 102", func(http.Header) bool { return len(iw.all()) > n })

			job.release <- struct{}{}
			iw.waitFor(t, "Progress 2/3", func(h http.Header) bool { return h.Get("Progress") == `2/3 "second"` })
			harness.Eventually(t, "the record to hold 2/3", func() bool {
				return storedRecord(t, dir, id).Progress == `2/3 "second"`
			})
			job.release <- struct{}{}

			res := <-done
			if res.err != nil || res.status != http.StatusCreated || res.body != "the job's answer" {
				t.Fatalf("final response: %d %q %v", res.status, res.body, res.err)
			}
			if res.header.Get("X-Handler") == "" || res.header.Get("X-Before") == "" {
				t.Errorf("final response lost fields: %v", res.header)
			}
			interims := iw.all()
			checkOnlyFields(t, interims, "Location", "Progress")
			for i, h := range interims {
				if i > 0 && h.Get("Location") != "" {
					t.Errorf("102 number %d carries Location too", i+1)
				}
				if p := h.Get("Progress"); p != `1/3 "first"` && p != `2/3 "second"` {
					t.Errorf("102 number %d carries Progress %q", i+1, p)
				}
			}
			// The result stays at the Location, as any job's.
			result := harness.ResultOf(t, base, loc)
			if result.Status != http.StatusCreated || string(result.Body) != "the job's answer" {
				t.Errorf("stored result: %d %q", result.Status, result.Body)
			}
			if p := storedRecord(t, dir, id).Progress; p != `2/3 "second"` {
				t.Errorf("final record's progress %q", p)
			}
		})
	}
}

// TestProcessingClientThatLeavesFindsResultAtLocation: the raw client
// reads the first 102 and closes; the job runs on and its result is at the
// 102's Location.
func TestProcessingClientThatLeavesFindsResultAtLocation(t *testing.T) {
	job := newSteppedJob(nil)
	harness.SetBehaviour(t, "progress_leave", job.serve)
	base, _, port := progressSite(t, "progress_leave", "wait 200ms", "")

	conn, err := harness.DialRaw(harness.Loopback(port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "POST /convert HTTP/1.1\r\nHost: 127.0.0.1\r\nPrefer: processing\r\nContent-Length: 3\r\n\r\nabc"); err != nil {
		t.Fatal(err)
	}
	tp := textproto.NewReader(bufio.NewReader(conn))
	line, err := tp.ReadLine()
	if err != nil || line != "HTTP/1.1 102 Processing" {
		t.Fatalf("first line %q, %v", line, err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatal(err)
	}
	loc := h.Get("Location")
	if len(h) != 1 || !strings.HasPrefix(loc, "/.well-known/processing/jobs/") {
		t.Fatalf("first 102 carries %v, want only a Location", h)
	}
	conn.Close()

	// The connection is gone; the job is not.
	if st := harness.AsyncDo(t, "GET", base+loc, nil); st.Status != 200 || st.JSON(t).Status != async.StatusRunning {
		t.Fatalf("monitor after the client left: %d %s", st.Status, st.Body)
	}
	job.release <- struct{}{}
	result := harness.ResultOf(t, base, loc)
	if result.Status != http.StatusCreated || string(result.Body) != "the job's answer" {
		t.Errorf("result: %d %q", result.Status, result.Body)
	}
}

// TestProcessingFastRequestStoresNothing: done within wait, the request is
// answered directly, with no 102, and nothing is stored.
func TestProcessingFastRequestStoresNothing(t *testing.T) {
	harness.SetBehaviour(t, "progress_fast", harness.SleepThen(10*time.Millisecond, "quick"))
	base, dir, _ := progressSite(t, "progress_fast", "wait 5s", "")
	iw, done := goTraced(t, harness.AsyncClient(), "POST", base+"/x", "Prefer", "processing")
	res := <-done
	if res.err != nil || res.status != 200 || res.body != "quick" {
		t.Fatalf("got %d %q %v", res.status, res.body, res.err)
	}
	if n := len(iw.all()); n != 0 {
		t.Errorf("%d 102s for a request done within wait", n)
	}
	if f := harness.JobFolders(t, dir); len(f) != 0 {
		t.Errorf("stored %v", f)
	}
}

// TestProcessingHTTP10GetsNoInterimAndNoJob: RFC 9110 §15.2, no 1xx to an
// HTTP/1.0 client; such a request is served as without the preference.
func TestProcessingHTTP10GetsNoInterimAndNoJob(t *testing.T) {
	harness.SetBehaviour(t, "progress_h10", harness.SleepThen(600*time.Millisecond, "slow"))
	_, dir, port := progressSite(t, "progress_h10", "wait 100ms", "")
	res := harness.RawRequest(t, harness.Loopback(port), "GET /x HTTP/1.0\r\nHost: 127.0.0.1\r\nPrefer: processing\r\n\r\n")
	if len(res.Interims) != 0 || res.Status != 200 || string(res.Body) != "slow" {
		t.Fatalf("HTTP/1.0: %d interims, %d %q\n%s", len(res.Interims), res.Status, res.Body, res.Wire)
	}
	if f := harness.JobFolders(t, dir); len(f) != 0 {
		t.Errorf("stored %v", f)
	}
}

// TestProcessingWithRespondAsyncGets202: with both preferences the client
// gets the 202 and no 102.
func TestProcessingWithRespondAsyncGets202(t *testing.T) {
	job := newSteppedJob(nil)
	harness.SetBehaviour(t, "progress_both", job.serve)
	base, _, _ := progressSite(t, "progress_both", "wait 200ms", "")
	iw, done := goTraced(t, harness.AsyncClient(), "POST", base+"/x", "Prefer", "processing, respond-async")
	res := <-done
	if res.status != http.StatusAccepted || !strings.HasPrefix(res.header.Get("Location"), "/.well-known/processing/jobs/") {
		t.Fatalf("got %d %v", res.status, res.header)
	}
	if n := len(iw.all()); n != 0 {
		t.Errorf("%d 102s before the 202", n)
	}
	job.release <- struct{}{}
	harness.ResultOf(t, base, res.header.Get("Location"))
}

// TestMonitorWithPreferProcessingSends102sUntilDone: a GET of the status
// document with `Prefer: processing` gets 102s with the latest Progress,
// then the monitor's 303.
func TestMonitorWithPreferProcessingSends102sUntilDone(t *testing.T) {
	job := newSteppedJob([]string{"1/2"}, []string{"2/2"})
	harness.SetBehaviour(t, "progress_monitor_wait", job.serve)
	base, _, _ := progressSite(t, "progress_monitor_wait", "wait 100ms", "")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/x", nil)

	iw, done := goTraced(t, harness.AsyncClient(), "GET", base+loc, "Prefer", "processing")
	iw.waitFor(t, "Progress 1/2", func(h http.Header) bool { return h.Get("Progress") == "1/2" })
	job.release <- struct{}{}
	iw.waitFor(t, "Progress 2/2", func(h http.Header) bool { return h.Get("Progress") == "2/2" })
	job.release <- struct{}{}
	res := <-done
	if res.err != nil || res.status != http.StatusSeeOther || res.header.Get("Location") != loc+"/result" {
		t.Fatalf("after the 102s: %d %v %v", res.status, res.header, res.err)
	}
	checkOnlyFields(t, iw.all(), "Progress")
}

// sseEvent is one event of a stream, or a comment.
type sseEvent struct {
	comment string
	data    string
}

// readEvents reads a text/event-stream body into a channel until it ends.
func readEvents(body io.Reader) <-chan sseEvent {
	out := make(chan sseEvent, 100)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "data: "):
				ev.data = line[len("data: "):]
			}
		}
	}()
	return out
}

// nextData returns the next data event, skipping comments; keepAlive
// counts the keep-alive comments seen.
func nextData(t *testing.T, events <-chan sseEvent, keepAlive *int) (harness.JobStatus, bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return harness.JobStatus{}, false
			}
			if ev.comment == "keep-alive" {
				*keepAlive++
			}
			if ev.data == "" {
				continue
			}
			var st harness.JobStatus
			if err := json.Unmarshal([]byte(ev.data), &st); err != nil {
				t.Fatalf("event data %q: %v", ev.data, err)
			}
			return st, true
		case <-timeout:
			t.Fatal("no event")
		}
	}
}

func openStream(t *testing.T, url string, header ...string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(harness.WithTimeout(t, 60*time.Second), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := harness.AsyncClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res, readEvents(res.Body)
}

// TestMonitorEventStream: the monitor streams an event per change of
// status or progress, keep-alive comments every interval, and ends after
// the terminal status.
func TestMonitorEventStream(t *testing.T) {
	job := newSteppedJob([]string{"1/2"}, []string{"2/2"})
	harness.SetBehaviour(t, "progress_sse", job.serve)
	base, _, _ := progressSite(t, "progress_sse", "wait 100ms", "")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/x", nil, "Authorization", "Bearer mine")

	// The monitor's binding applies: another Authorization gets the 404.
	if res := harness.AsyncDo(t, "GET", base+loc, nil, "Accept", "text/event-stream", "Authorization", "Bearer other"); res.Status != 404 {
		t.Errorf("stream with another Authorization: %d", res.Status)
	}

	res, events := openStream(t, base+loc, "Authorization", "Bearer mine")
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %v", res.StatusCode, res.Header)
	}
	keepAlive := 0
	st, _ := nextData(t, events, &keepAlive)
	if st.Status != async.StatusRunning || st.ID != idOf(t, loc) {
		t.Fatalf("first event %+v", st)
	}
	if st.Progress != "1/2" {
		// The job may not have reported yet when the stream opened.
		st, _ = nextData(t, events, &keepAlive)
	}
	if st.Progress != "1/2" {
		t.Fatalf("event %+v, want progress 1/2", st)
	}
	for keepAlive == 0 {
		select {
		case ev := <-events:
			if ev.data != "" {
				t.Fatalf("an event with nothing changed: %q", ev.data)
			}
			if ev.comment == "keep-alive" {
				keepAlive++
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no keep-alive comment")
		}
	}
	job.release <- struct{}{}
	if st, _ = nextData(t, events, &keepAlive); st.Status != async.StatusRunning || st.Progress != "2/2" {
		t.Fatalf("event after the step: %+v", st)
	}
	job.release <- struct{}{}
	if st, _ = nextData(t, events, &keepAlive); st.Status != async.StatusSucceeded {
		t.Fatalf("last event %+v", st)
	}
	if _, more := nextData(t, events, &keepAlive); more {
		t.Fatal("the stream went on after the terminal status")
	}
}

// TestMonitorEventStreamFollowsAnotherInstance: a job whose record another
// instance writes (here the test, writing the shared storage folder as
// that instance would) shows its changes within refresh, and its end.
func TestMonitorEventStreamFollowsAnotherInstance(t *testing.T) {
	harness.SetBehaviour(t, "progress_other", harness.SleepThen(0, "unused"))
	base, dir, _ := progressSite(t, "progress_other", "wait 100ms", "")
	id := strings.Repeat("A", async.JobIDLen)
	now := time.Now()
	rec := async.JobRecord{ID: id, Status: async.StatusRunning, Created: now, Updated: now,
		Refresh: 100 * time.Millisecond, Keep: time.Hour, Method: "POST", Path: "/x", Progress: "1/3"}
	write := func() {
		t.Helper()
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "processing", "jobs", id, "status.json")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	write()
	loc := "/.well-known/processing/jobs/" + id
	_, events := openStream(t, base+loc)
	keepAlive := 0
	if st, _ := nextData(t, events, &keepAlive); st.Progress != "1/3" {
		t.Fatalf("first event %+v", st)
	}
	rec.Updated, rec.Progress = time.Now(), "2/3"
	write()
	if st, _ := nextData(t, events, &keepAlive); st.Progress != "2/3" || st.Status != async.StatusRunning {
		t.Fatalf("event after the other instance's refresh: %+v", st)
	}
	rec.Updated, rec.Ended, rec.Status, rec.Reason = time.Now(), time.Now(), async.StatusFailed, "handler error: 502 Bad Gateway"
	write()
	if st, _ := nextData(t, events, &keepAlive); st.Status != async.StatusFailed || st.Reason != rec.Reason {
		t.Fatalf("last event %+v", st)
	}
	if _, more := nextData(t, events, &keepAlive); more {
		t.Fatal("the stream went on after the terminal status")
	}
}

// ---- events ---------------------------------------------------------------

// recordedEvents is what the test event handler saw.
var recordedEvents = struct {
	sync.Mutex
	list []caddy.Event
}{}

// eventRecorder is the event handler module `events.handlers.test_record`.
type eventRecorder struct{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.test_record", New: func() caddy.Module { return new(eventRecorder) }}
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents.Lock()
	recordedEvents.list = append(recordedEvents.list, e)
	recordedEvents.Unlock()
	return nil
}

func (eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for d.Next() {
	}
	return nil
}

func init() { caddy.RegisterModule(eventRecorder{}) }

var _ caddyevents.Handler = eventRecorder{}

// eventsFor returns the recorded events of job id.
func eventsFor(id string) []caddy.Event {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	var out []caddy.Event
	for _, e := range recordedEvents.list {
		if e.Data["id"] == id {
			out = append(out, e)
		}
	}
	return out
}

// TestJobLifeEmitsEvents: started, then succeeded, failed or canceled, each
// with the job's id, monitor path, status, reason and duration, from the
// processing handler.
func TestJobLifeEmitsEvents(t *testing.T) {
	var step sync.Map // path -> chan struct{}
	harness.SetBehaviour(t, "progress_events", func(w http.ResponseWriter, r *http.Request) error {
		ch, _ := step.Load(r.URL.Path)
		select {
		case <-ch.(chan struct{}):
		case <-r.Context().Done():
			return r.Context().Err()
		}
		if r.URL.Path == "/fail" {
			return fmt.Errorf("upstream gone")
		}
		_, err := io.WriteString(w, "ok")
		return err
	})
	base, dir, _ := progressSite(t, "progress_events", "wait 100ms", `events {
		on processing_job_started test_record
		on processing_job_succeeded test_record
		on processing_job_failed test_record
		on processing_job_canceled test_record
	}`)
	cases := []struct {
		path, event, status, reason string
		end                         func(loc string, release chan struct{})
	}{
		{"/ok", async.EventJobSucceeded, async.StatusSucceeded, "", func(loc string, release chan struct{}) { close(release) }},
		{"/fail", async.EventJobFailed, async.StatusFailed, "handler error: 500 Internal Server Error", func(loc string, release chan struct{}) { close(release) }},
		{"/cancel", async.EventJobCanceled, async.StatusCanceled, async.ErrDeleted.Error(), func(loc string, _ chan struct{}) {
			if res := harness.AsyncDo(t, "DELETE", base+loc, nil); res.Status != 204 {
				t.Errorf("DELETE: %d", res.Status)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			release := make(chan struct{})
			step.Store(c.path, release)
			loc, _ := harness.SubmitAsync(t, base, "POST", c.path, nil)
			id := idOf(t, loc)
			c.end(loc, release)
			harness.Eventually(t, "two events", func() bool { return len(eventsFor(id)) >= 2 })
			evs := eventsFor(id)
			if len(evs) != 2 || evs[0].Name() != async.EventJobStarted || evs[1].Name() != c.event {
				t.Fatalf("events %v", evs)
			}
			for i, e := range evs {
				if e.Origin() == nil || e.Origin().CaddyModule().ID != "http.handlers.processing" {
					t.Errorf("event %d's origin %v", i, e.Origin())
				}
				if e.Data["monitor"] != loc || e.Data["method"] != "POST" || e.Data["path"] != c.path {
					t.Errorf("event %d's data %v", i, e.Data)
				}
				if d, ok := e.Data["duration"].(float64); !ok || d < 0 || d > 30 {
					t.Errorf("event %d's duration %v", i, e.Data["duration"])
				}
			}
			end := evs[1].Data
			if end["status"] != c.status || end["reason"] != c.reason {
				t.Errorf("end event's data %v, want status %q reason %q", end, c.status, c.reason)
			}
			if evs[0].Data["status"] != async.StatusRunning {
				t.Errorf("start event's data %v", evs[0].Data)
			}
		})
	}
	// A job whose instance is gone: the instance that declares it lost
	// (here, a monitor request) emits its failed event, once.
	t.Run("lost", func(t *testing.T) {
		id := randomJobID(t)
		then := time.Now().Add(-time.Minute)
		writeRecord(t, dir, async.JobRecord{ID: id, Status: async.StatusRunning, Created: then, Updated: then,
			Refresh: 100 * time.Millisecond, Keep: time.Hour, Method: "POST", Path: "/gone"})
		loc := "/.well-known/processing/jobs/" + id
		for range 2 {
			if st := harness.AsyncDo(t, "GET", base+loc, nil).JSON(t); st.Status != async.StatusFailed {
				t.Fatalf("monitor: %+v", st)
			}
		}
		harness.Eventually(t, "the failed event", func() bool { return len(eventsFor(id)) >= 1 })
		evs := eventsFor(id)
		if len(evs) != 1 || evs[0].Name() != async.EventJobFailed || evs[0].Data["reason"] != async.ReasonLost || evs[0].Data["path"] != "/gone" {
			t.Fatalf("events %v", evs)
		}
	})
}

// goroutineIn reports whether some goroutine is inside fn, by the stacks
// of all goroutines.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Contains(string(buf[:n]), fn)
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestFollowersEndWithTheirClient: an event stream, a wait on the status
// document and a waiting submitter each end when their client leaves,
// while the job runs on.
func TestFollowersEndWithTheirClient(t *testing.T) {
	job := newSteppedJob(nil)
	harness.SetBehaviour(t, "progress_leaving", job.serve)
	base, _, _ := progressSite(t, "progress_leaving", "wait 100ms", "")
	loc, _ := harness.SubmitAsync(t, base, "POST", "/x", nil)

	for _, c := range []struct {
		name, fn string
		start    func(ctx context.Context)
	}{
		{"event stream", "async.(*Config).serveEvents", func(ctx context.Context) {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+loc, nil)
			req.Header.Set("Accept", "text/event-stream")
			if res, err := harness.AsyncClient().Do(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}},
		{"status document", "async.(*Config).waitOnMonitor", func(ctx context.Context) {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+loc, nil)
			req.Header.Set("Prefer", "processing")
			if res, err := harness.AsyncClient().Do(req); err == nil {
				res.Body.Close()
			}
		}},
		{"submitter", "async.(*job).answerWithInterims", func(ctx context.Context) {
			req, _ := http.NewRequestWithContext(ctx, "POST", base+"/y", nil)
			req.Header.Set("Prefer", "processing")
			if res, err := harness.AsyncClient().Do(req); err == nil {
				res.Body.Close()
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.start(ctx)
			}()
			harness.Eventually(t, c.fn+" to run", func() bool { return goroutineIn(c.fn) })
			cancel()
			<-done
			harness.Eventually(t, c.fn+" to end", func() bool { return !goroutineIn(c.fn) })
		})
	}
	close(job.release) // both jobs answer
	if res := harness.ResultOf(t, base, loc); res.Status != http.StatusCreated {
		t.Errorf("the job after its followers left: %d %q", res.Status, res.Body)
	}
}

// TestProcessingMaxBoundsAsyncInterims: the processing handler's max
// bounds the 102s of a waiting submitter, those sent at a new Progress
// included.
func TestProcessingMaxBoundsAsyncInterims(t *testing.T) {
	job := newSteppedJob([]string{"1/3"}, []string{"2/3"}, []string{"3/3"})
	harness.SetBehaviour(t, "progress_max", job.serve)
	dir := harness.StorageDir(t)
	port, _ := harness.StartCaddyGlobal(t, harness.AsyncGlobal(dir, ""), `
http://127.0.0.1:{PORT} {
	processing {
		interval 1h
		max 2
		async {
			wait 100ms
		}
	}
	test_work progress_max
}
`)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	iw, done := goTraced(t, harness.AsyncClient(), "POST", base+"/x", "Prefer", "processing")
	loc := iw.location(t)
	job.release <- struct{}{}
	iw.waitFor(t, "Progress 2/3", func(h http.Header) bool { return h.Get("Progress") == "2/3" })
	job.release <- struct{}{}
	harness.Eventually(t, "the job to report 3/3", func() bool {
		return harness.AsyncDo(t, "GET", base+loc, nil).JSON(t).Progress == "3/3"
	})
	job.release <- struct{}{}
	if res := <-done; res.status != http.StatusCreated {
		t.Fatalf("final: %d %q %v", res.status, res.body, res.err)
	}
	if n := len(iw.all()); n != 2 {
		t.Errorf("%d 102s with max 2: %v", n, iw.all())
	}
}

// TestProgressAcrossInstances: two Caddy processes sharing a storage
// folder. A job runs on A behind an upstream that reports Progress on 102s
// of its own; B's event stream shows that progress, read from the record A
// stores at each refresh, and then the terminal status.
func TestProgressAcrossInstances(t *testing.T) {
	bin := buildDemo(t)
	dir := harness.StorageDir(t)
	a := startClusterNode(t, bin, dir, 300*time.Millisecond)
	b := startClusterNode(t, bin, dir, 300*time.Millisecond)

	loc, _ := harness.SubmitAsync(t, a.base, "GET", "/slow?seconds=3", nil, "Prefer", "processing")
	_, events := openStream(t, b.base+loc)
	keepAlive := 0
	var progress []string
	for {
		st, more := nextData(t, events, &keepAlive)
		if !more {
			break
		}
		if st.Status == async.StatusRunning && st.Progress != "" {
			progress = append(progress, st.Progress)
		}
		if st.Status != async.StatusRunning {
			if st.Status != async.StatusSucceeded {
				t.Fatalf("B's last event %+v", st)
			}
			break
		}
	}
	// The upstream reports 0/3, 1/3 and 2/3, a second apart: with a
	// refresh of 300ms, B sees at least two of them.
	if len(progress) < 2 || progress[len(progress)-1] != "2/3" {
		t.Errorf("B's events showed progress %q", progress)
	}
	if res := harness.ResultOf(t, b.base, loc); string(res.Body) != "done after 3 seconds\n" {
		t.Errorf("result from B: %d %q", res.Status, res.Body)
	}
}
