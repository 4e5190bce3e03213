package async

// Fuzz targets and table tests for what a client sends to async mode: the
// Prefer field and the monitor's paths. Run by .ci/fuzz.sh.

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func TestPreferParsing(t *testing.T) {
	cases := []struct {
		lines []string
		async bool
		wait  time.Duration // -1: no wait
	}{
		{[]string{"respond-async"}, true, -1},
		{[]string{"Respond-Async"}, true, -1},
		{[]string{"respond-async, wait=10"}, true, 10 * time.Second},
		{[]string{"respond-async", "wait=3"}, true, 3 * time.Second},
		{[]string{"wait = 3 , respond-async ; foo=bar ; baz"}, true, 3 * time.Second},
		{[]string{"wait=\"7\", respond-async"}, true, 7 * time.Second},
		{[]string{"respond-async, wait=soon"}, true, -1},               // not a number: ignored
		{[]string{"respond-async, wait=-1"}, true, -1},                 // not delta-seconds
		{[]string{"respond-async, wait=1.5"}, true, -1},                // not delta-seconds
		{[]string{"respond-async, wait="}, false, -1},                  // malformed line: absent
		{[]string{"respond-async, =1"}, false, -1},                     // malformed
		{[]string{"respond-async; a=\"x"}, false, -1},                  // unterminated quote
		{[]string{"respond-async wait=1"}, false, -1},                  // no comma
		{[]string{"respond-async, wait=1", "x y"}, true, time.Second},  // the bad line alone is dropped
		{[]string{"wait=1, wait=9, respond-async"}, true, time.Second}, // first one counts
		{[]string{"return=minimal"}, false, -1},
		{[]string{",, respond-async ,"}, true, -1},
		{[]string{"respond-asyncx"}, false, -1},
		{[]string{"wait=99999999999999999999, respond-async"}, true, 1<<63 - 1},
		{nil, false, -1},
	}
	for _, c := range cases {
		got := preferAsync(c.lines)
		wantWait := c.wait >= 0
		if got.respondAsync != c.async || got.hasWait != wantWait || (wantWait && got.wait != c.wait) {
			t.Errorf("%q: got %+v, want async=%v wait=%v", c.lines, got, c.async, c.wait)
		}
	}
}

func FuzzPreferAsync(f *testing.F) {
	for _, s := range []string{"respond-async, wait=10", "wait=\"1\";a;b=\"c\\\"d\"", ",,", "wait=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a := preferAsync([]string{s})
		if a.hasWait && a.wait < 0 {
			t.Fatalf("%q gave a negative wait", s)
		}
	})
}

// FuzzMonitorPath sends any path and method to the monitor of a real
// file_system storage holding one job: nothing may panic, nothing may answer
// other than 404, 405 or the one job's own responses, and nothing but the
// job's exact paths may reach it.
func FuzzMonitorPath(f *testing.F) {
	dir := f.TempDir()
	storage := &certmagic.FileStorage{Path: dir}
	a := &Config{Monitor: "/m", monitorSl: "/m/", storage: storage, logger: zap.NewNop(), keep: time.Hour, refresh: time.Minute}
	id := newJobID()
	now := time.Now()
	rec := jobRecord{ID: id, Status: statusSucceeded, Created: now, Updated: now, Ended: now, Keep: time.Hour, Refresh: time.Minute}
	rec.Auth = a.bindingHash(id, &http.Request{Header: http.Header{"Authorization": {"Bearer k"}}})
	if err := storeJobRecord(f.Context(), storage, rec); err != nil {
		f.Fatal(err)
	}
	rc := &recorder{max: 1 << 20}
	rc.Header().Set("X", "y")
	rc.WriteHeader(201)
	_, _ = rc.Write([]byte("job body"))
	res, err := (&job{id: id, auth: rec.Auth, rec: *rc}).resultToStore()
	if err != nil {
		f.Fatal(err)
	}
	if err := storeResult(f.Context(), storage, id, res); err != nil {
		f.Fatal(err)
	}
	for _, p := range []string{"/m/" + id, "/m/" + id + "/result", "/m/", "/m", "/m/../m/" + id, "/m/" + id + "/../" + id, "/m/%00", "/m/" + id + "/result/x"} {
		f.Add("GET", p, "Bearer k")
	}
	f.Add("DELETE", "/m/"+strings.ToLower(id), "")
	f.Fuzz(func(t *testing.T, method, path, auth string) {
		if method != "GET" && method != "HEAD" {
			method = "POST" // DELETE would remove the one job; its path is covered by the seeds' checks
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method = method
		r.URL.Path = path
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		err := a.serveMonitor(w, r)
		exact := path == "/m/"+id || path == "/m/"+id+"/result"
		switch {
		case err != nil:
			t.Fatalf("%s %q: error %v", method, path, err)
		case w.Code == 404 || w.Code == 405:
		case exact && auth == "Bearer k":
		default:
			t.Fatalf("%s %q (auth %q) answered %d: %s", method, path, auth, w.Code, w.Body)
		}
		if !exact || auth != "Bearer k" {
			if strings.Contains(w.Body.String(), "job body") || strings.Contains(w.Body.String(), id) {
				t.Fatalf("%s %q (auth %q) leaked the job: %s", method, path, auth, w.Body)
			}
		}
	})
}
