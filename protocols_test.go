package processing

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

func TestEveryProtocolGetsInterims(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.AfterInterims(4, "slow body"))
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	processing {
		delay 100ms
		interval 100ms
		max 4
		header X-Step {http.processing.count}
	}
	test_work slow
`))
	plain := fmt.Sprintf("http://127.0.0.1:%d/", port)
	secure := fmt.Sprintf("https://127.0.0.1:%d/", tlsPort)
	h3, closeH3 := harness.H3Client()
	defer closeH3()
	// quic-go's client gives up after 5 interim responses: max 4 keeps it
	// working, which is what the README recommends for it.
	for _, tc := range []struct {
		name, url, proto string
		client           *http.Client
	}{
		{"HTTP/1.1", plain, "HTTP/1.1", harness.H1Client()},
		{"HTTP/1.1+TLS", secure, "HTTP/1.1", harness.H1Client()},
		{"h2c", plain, "HTTP/2.0", harness.H2CClient()},
		{"HTTP/2", secure, "HTTP/2.0", harness.H2Client()},
		{"HTTP/3", secure, "HTTP/3.0", h3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tc.url, nil)
			s, err := harness.TracedDo(t, tc.client, req)
			if err != nil {
				t.Fatal(err)
			}
			if s.Proto != tc.proto || s.Status != 200 || string(s.Body) != "slow body" {
				t.Fatalf("got %s %d %q", s.Proto, s.Status, s.Body)
			}
			if len(s.Interims) != 4 {
				t.Fatalf("got %d interims, want 4 (max): %+v", len(s.Interims), s.Interims)
			}
			for i, in := range s.Interims {
				if in.Code != 102 || in.Header.Get("X-Step") != strconv.Itoa(i+1) || len(in.Header) != 1 {
					t.Errorf("interim %d: %d %v", i, in.Code, in.Header)
				}
			}
		})
	}
}

// expectUpload reads the request body after wait, answers with its hash
// after another pause; the body arrives with Expect: 100-continue.
func expectUpload(wait, after time.Duration) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		time.Sleep(wait)
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			return err
		}
		time.Sleep(after)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		return nil
	}
}

func TestExpectContinueHTTP11(t *testing.T) {
	harness.SetBehaviour(t, "upload", expectUpload(300*time.Millisecond, 300*time.Millisecond))
	port, _ := harness.StartCaddy(t, `
http://127.0.0.1:{PORT} {
	processing {
		delay 20ms
		interval 20ms
	}
	test_work upload
}
`)
	body := bytes.Repeat([]byte("expect-continue!"), 64<<10) // 1 MiB
	sum := sha256.Sum256(body)

	conn, err := harness.DialRaw(harness.Loopback(port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /u HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", len(body))

	// The handler sleeps before reading the body: 102s are due long
	// before it, but the first thing on the wire must be the 100.
	wire := new(bytes.Buffer)
	br := bufio.NewReader(io.TeeReader(conn, wire))
	tp := textproto.NewReader(br)
	first, err := tp.ReadLine()
	if err != nil {
		t.Fatal(err)
	}
	if first != "HTTP/1.1 100 Continue" {
		t.Fatalf("first status line %q, want the 100 Continue", first)
	}
	if _, err := tp.ReadMIMEHeader(); err != nil {
		t.Fatal(err)
	}
	// Send the body slowly, across many intervals, while 102s flow.
	writeErr := make(chan error, 1)
	go func() {
		for chunk := range slicesChunk(body, len(body)/8) {
			if _, err := conn.Write(chunk); err != nil {
				writeErr <- err
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		writeErr <- nil
	}()
	res, err := harness.ReadRawResponse(br, time.Now(), false)
	if err != nil {
		t.Fatalf("%v\n%s", err, wire.Bytes())
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %x", len(body), sum); res.Status != 200 || string(res.Body) != want {
		t.Fatalf("final %d %q, want %q", res.Status, res.Body, want)
	}
	if len(res.Interims) < 3 {
		t.Fatalf("got %d 102s after the 100", len(res.Interims))
	}
	for _, in := range res.Interims {
		if in.Raw != harness.BareProcessing {
			t.Fatalf("interim %q after the 100, want only bare 102s", in.Raw)
		}
	}
	if c := bytes.Count(wire.Bytes(), []byte("100 Continue")); c != 1 {
		t.Fatalf("%d 100 Continue on the wire", c)
	}
}

func slicesChunk(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			k := min(n, len(b))
			if !yield(b[:k]) {
				return
			}
			b = b[k:]
		}
	}
}

func TestExpectContinueHTTP2NotStalled(t *testing.T) {
	harness.SetBehaviour(t, "upload", expectUpload(300*time.Millisecond, 400*time.Millisecond))
	_, tlsPort := harness.StartCaddy(t, `
https://127.0.0.1:{TLSPORT} {
	tls internal
	processing {
		delay 20ms
		interval 50ms
	}
	test_work upload
}
`)
	body := bytes.Repeat([]byte("h2-expect"), 100000)
	sum := sha256.Sum256(body)
	client := harness.H2Client()
	// A stalled 100 would show as a wait of this whole timeout.
	client.Transport.(*http.Transport).ExpectContinueTimeout = 8 * time.Second
	for range 3 {
		req, _ := http.NewRequest("PUT", fmt.Sprintf("https://127.0.0.1:%d/u", tlsPort), bytes.NewReader(body))
		req.Header.Set("Expect", "100-continue")
		start := time.Now()
		s, err := harness.TracedDo(t, client, req)
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d %x", len(body), sum); s.Proto != "HTTP/2.0" || s.Status != 200 || string(s.Body) != want {
			t.Fatalf("got %s %d %q", s.Proto, s.Status, s.Body)
		}
		if took > 5*time.Second {
			t.Fatalf("request took %v: the client waited for its 100 Continue", took)
		}
		if s.Count(100) != 1 || s.Count(102) < 2 {
			t.Fatalf("interims %+v, want one 100 then 102s", s.Interims)
		}
		if s.Interims[0].Code != 100 {
			t.Fatalf("first interim %d, want the 100", s.Interims[0].Code)
		}
	}
}

// TestConcurrentHeaderWritesAndInterims has the next handler set header
// fields and write in a loop while 102s fire every millisecond, across
// HTTP/1.1 and HTTP/2, many times over. Under -race this is where a 102
// reading the handler's map, or a late tick, would show.
func TestConcurrentHeaderWritesAndInterims(t *testing.T) {
	harness.SetBehaviour(t, "busy", func(w http.ResponseWriter, r *http.Request) error {
		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		until := time.Now().Add(time.Duration(rng.IntN(4000)) * time.Microsecond)
		for i := 0; time.Now().Before(until); i++ {
			w.Header().Set("X-Busy-"+strconv.Itoa(i%7), strconv.Itoa(i))
			w.Header().Add("Set-Cookie", "c"+strconv.Itoa(i%3)+"=v")
			w.Header().Del("X-Busy-" + strconv.Itoa((i+3)%7))
			time.Sleep(50 * time.Microsecond)
		}
		w.Header().Set("X-Done", "yes")
		for i := range 20 {
			fmt.Fprintf(w, "line %d\n", i)
			if i%5 == 0 {
				http.NewResponseController(w).Flush()
			}
		}
		return nil
	})
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	processing {
		delay 1ms
		interval 1ms
	}
	test_work busy
`))
	var want strings.Builder
	for i := range 20 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	clients := map[string]struct {
		c   *http.Client
		url string
	}{
		"HTTP/1.1": {harness.H1Client(), fmt.Sprintf("http://127.0.0.1:%d/", port)},
		"HTTP/2":   {harness.H2Client(), fmt.Sprintf("https://127.0.0.1:%d/", tlsPort)},
	}
	for name, cl := range clients {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			interims := 0
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 40 {
						req, _ := http.NewRequest("GET", cl.url, nil)
						s, err := harness.TracedDo(t, cl.c, req)
						if err != nil {
							t.Error(err)
							return
						}
						if s.Status != 200 || string(s.Body) != want.String() || s.Header.Get("X-Done") != "yes" {
							t.Errorf("got %d %q %v", s.Status, s.Body, s.Header)
							return
						}
						for _, in := range s.Interims {
							if in.Code != 102 || len(in.Header) != 0 {
								t.Errorf("interim %d with fields %v", in.Code, in.Header)
								return
							}
						}
						mu.Lock()
						interims += len(s.Interims)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if interims < 40 {
				t.Errorf("only %d interims over 320 requests: the test did not exercise the race", interims)
			}
			t.Logf("%d interims over 320 requests", interims)
		})
	}
}

// TestHTTP2ResetDuringInterims cancels HTTP/2 requests at random moments
// while 102s fire every millisecond. A stream reset can make WriteHeader
// return before the frame writer has encoded the 102; under -race this is
// where a write to the header map after it would show.
func TestHTTP2ResetDuringInterims(t *testing.T) {
	harness.SetBehaviour(t, "waits", func(w http.ResponseWriter, r *http.Request) error {
		select {
		case <-r.Context().Done():
			return nil
		case <-time.After(time.Duration(rand.IntN(6)) * time.Millisecond):
		}
		w.Header().Set("X-Finished", "yes")
		_, err := io.WriteString(w, "finished")
		return err
	})
	_, tlsPort := harness.StartCaddy(t, `
https://127.0.0.1:{TLSPORT} {
	tls internal
	processing {
		delay 1ms
		interval 1ms
		header X-Step {http.processing.count}
	}
	test_work waits
}
`)
	client := harness.H2Client()
	url := fmt.Sprintf("https://127.0.0.1:%d/", tlsPort)
	var wg sync.WaitGroup
	var mu sync.Mutex
	finished, cancelled := 0, 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(6000))*time.Microsecond)
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				s, err := harness.TracedDo(t, client, req)
				cancel()
				mu.Lock()
				if err != nil {
					cancelled++
				} else {
					finished++
					if s.Status != 200 || string(s.Body) != "finished" || s.Header.Get("X-Step") != "" {
						t.Errorf("got %d %q %v", s.Status, s.Body, s.Header)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d finished, %d cancelled", finished, cancelled)
	if cancelled == 0 {
		t.Errorf("no request was cancelled: the test did not exercise resets")
	}
	// The server is still healthy.
	req, _ := http.NewRequest("GET", url, nil)
	if s, err := harness.TracedDo(t, client, req); err != nil || s.Status != 200 {
		t.Fatalf("after the resets: %v", err)
	}
}
