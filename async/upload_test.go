package async_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// startSlowUpload opens a connection that submits a job with a 100-byte
// body and sends one byte of it. It returns once the server has started
// reading the body: Go's server sends 100 Continue on its first read.
func startSlowUpload(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := harness.DialRaw(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: %s\r\nPrefer: respond-async\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", addr)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("slow upload: %q %v, want 100 Continue", line, err)
	}
	if _, err := io.WriteString(conn, "x"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestAsyncSlowUploadsHoldNoSlot: with max_jobs 3, three uploads that
// stall do not make another async request get 503: a slot is taken once a
// body is in.
func TestAsyncSlowUploadsHoldNoSlot(t *testing.T) {
	harness.SetBehaviour(t, "async_quick", harness.SleepThen(10*time.Millisecond, "quick"))
	base, _ := harness.StartAsync(t, "async_quick", "max_jobs 3\n\t\t\tupload_timeout 1m")
	addr := strings.TrimPrefix(base, "http://")
	for range 3 {
		startSlowUpload(t, addr)
	}
	for range 3 {
		res := harness.AsyncDo(t, "POST", base+"/", []byte("body"), "Prefer", "respond-async")
		if res.Status != http.StatusOK || string(res.Body) != "quick" {
			t.Errorf("with three uploads in progress: %d %q, want 200 quick", res.Status, res.Body)
		}
	}
}

// TestAsyncUploadTimeout: a body that does not arrive within upload_timeout
// gets 408, and the connection closes.
func TestAsyncUploadTimeout(t *testing.T) {
	harness.SetBehaviour(t, "async_quick", harness.SleepThen(10*time.Millisecond, "quick"))
	base, _ := harness.StartAsync(t, "async_quick", "upload_timeout 1s")
	addr := strings.TrimPrefix(base, "http://")
	res := harness.RawRequest(t, addr, "POST / HTTP/1.1\r\nHost: "+addr+"\r\nPrefer: respond-async\r\nContent-Length: 100\r\n\r\nx", harness.ReadToClose)
	if res.Status != http.StatusRequestTimeout || res.Header.Get("Connection") != "close" {
		t.Errorf("stalled upload: %d Connection %q, want 408 and close", res.Status, res.Header.Get("Connection"))
	}
	if res.Elapsed < 900*time.Millisecond || res.Elapsed > 20*time.Second {
		t.Errorf("answered and closed after %v, want about upload_timeout (1s)", res.Elapsed)
	}
}

// TestAsyncRefusalReadByGoClient: Go's client, still sending a body that is
// over max_body, reads the 413, by Content-Length and by counting, and a
// body that ends within the read-and-discard bound leaves the connection
// usable.
func TestAsyncRefusalReadByGoClient(t *testing.T) {
	harness.SetBehaviour(t, "async_quick", harness.SleepThen(10*time.Millisecond, "quick"))
	base, _ := harness.StartAsync(t, "async_quick", "max_body 1MiB")
	client := harness.AsyncClient()
	body := bytes.Repeat([]byte("0123456789abcdef"), (8<<20)/16)
	for i := range 5 {
		for _, chunked := range []bool{false, true} {
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // hides the length: Transfer-Encoding: chunked
			}
			req, _ := http.NewRequest("POST", base+"/", rd)
			req.Header.Set("Prefer", "respond-async")
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("round %d, chunked %v: %v", i, chunked, err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("round %d, chunked %v: %d, want 413", i, chunked, res.StatusCode)
			}
		}
	}
}

// TestAsyncRefusedExpectContinueClosesAtOnce: a request that asked for 100
// Continue and is refused gets no 100, `Connection: close`, and its
// connection closes at once, not at Caddy's read timeout.
func TestAsyncRefusedExpectContinueClosesAtOnce(t *testing.T) {
	harness.SetBehaviour(t, "async_quick", harness.SleepThen(10*time.Millisecond, "quick"))
	base, _ := harness.StartAsync(t, "async_quick", "max_body 1MiB")
	addr := strings.TrimPrefix(base, "http://")
	for _, size := range []int{1<<20 + 1, 64 << 20} {
		res := harness.RawRequest(t, addr, fmt.Sprintf("PUT / HTTP/1.1\r\nHost: %s\r\nPrefer: respond-async\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", addr, size), harness.ReadToClose)
		if res.Status != http.StatusRequestEntityTooLarge || len(res.Interims) != 0 || res.Header.Get("Connection") != "close" {
			t.Errorf("Content-Length %d: %d after %d interim responses, Connection %q; want 413, none, close", size, res.Status, len(res.Interims), res.Header.Get("Connection"))
		}
		if res.Elapsed > 10*time.Second {
			t.Errorf("Content-Length %d: the connection closed after %v", size, res.Elapsed)
		}
	}
}
