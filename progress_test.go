package processing

import (
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// TestLaterInterimsCarryForwardedProgress: an upstream's own 102 carrying
// Progress (draft-wright-http-progress), forwarded by reverse_proxy, makes
// the module's later 102s carry the latest valid value; a value the draft's
// grammar does not allow is ignored.
func TestLaterInterimsCarryForwardedProgress(t *testing.T) {
	harness.LeakCheck(t)
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Progress", `1/2 "step one"`)
		w.WriteHeader(http.StatusProcessing)
		w.Header().Set("Progress", "3/2 (smaller denominator: not allowed)")
		w.WriteHeader(http.StatusProcessing)
		w.Header().Del("Progress")
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "upstream body")
	})}
	go func() { _ = upstream.Serve(ln) }()
	t.Cleanup(func() { _ = upstream.Close() })

	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 100ms
		interval 100ms
		header X-Step "{http.processing.count}"
	}
	reverse_proxy `+ln.Addr().String()+`
}
`)
	var mu sync.Mutex
	var seen []textproto.MIMEHeader
	var once sync.Once
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		mu.Lock()
		seen = append(seen, h)
		mu.Unlock()
		// Two of the module's 102s with the value: then the upstream answers.
		if h.Get("X-Step") != "" && h.Get("Progress") == `1/2 "step one"` && h.Get("X-Step") >= "2" {
			once.Do(func() { close(release) })
		}
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(harness.WithTimeout(t, 30*time.Second), trace), "GET", "http://"+harness.Loopback(port)+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := harness.H1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "upstream body" {
		t.Fatalf("final: %d %q", res.StatusCode, body)
	}
	mu.Lock()
	defer mu.Unlock()
	forwarded, ours := 0, 0
	for i, h := range seen {
		switch {
		case h.Get("X-Step") == "":
			forwarded++
		default:
			ours++
			if p := h.Get("Progress"); forwarded > 0 && p != `1/2 "step one"` {
				t.Errorf("102 number %d (the module's, after the upstream's): Progress %q, want the upstream's valid one", i+1, p)
			}
			if len(h) > 2 {
				t.Errorf("102 number %d carries %v", i+1, h)
			}
		}
	}
	if forwarded != 2 || ours < 2 {
		t.Errorf("%d forwarded 1xx and %d of the module's 102s: %v", forwarded, ours, seen)
	}
}
