package processing

// No 102 while the request body is still arriving (RFC 2518 §10.1: a 102
// says the server has the complete request), on every protocol: each test
// uploads slowly through `processing 100ms` to a handler that reads the
// whole body and then works, and checks that no 102 reached the client
// before the last of the body left it, and that 102s came after.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

const (
	// uploadSpread is how long each test upload takes to send, many times
	// gateDelay, so that 102s would be due throughout it.
	uploadSpread = 1500 * time.Millisecond
	uploadPieces = 15
	// gateDelay is the delay and interval of gateSite.
	gateDelay = 100 * time.Millisecond
)

// gateSite serves every protocol with processing every gateDelay in front
// of the test_work behaviour "upload".
var gateSite = harness.ProtocolSites(`
	processing {
		delay 100ms
		interval 100ms
		max 4
	}
	test_work upload
`)

// readAllThenWork reads the whole request body, works for long enough to
// get 102s, and answers with the body's length and hash.
func readAllThenWork(w http.ResponseWriter, r *http.Request) error {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		return err
	}
	time.Sleep(5 * gateDelay)
	_, err = fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	return err
}

// uploadBody is a body of n bytes and the answer readAllThenWork gives
// for it.
func uploadBody(n int) ([]byte, string) {
	body := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	return body, fmt.Sprintf("%d %x", len(body), sha256.Sum256(body))
}

func TestNoInterimWhileBodyArrivesHTTP11(t *testing.T) {
	harness.SetBehaviour(t, "upload", readAllThenWork)
	port, _ := harness.StartCaddy(t, gateSite)
	body, want := uploadBody(256 << 10)
	for _, expect := range []bool{false, true} {
		t.Run("expect="+strconv.FormatBool(expect), func(t *testing.T) {
			head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n", len(body))
			if expect {
				head += "Expect: 100-continue\r\n"
			}
			res, lastWrite, err := harness.RawUpload(harness.Loopback(port), head+"\r\n", body, uploadPieces, uploadSpread)
			if err != nil {
				t.Fatalf("%v\n%s", err, res.Wire)
			}
			if res.Status != 200 || string(res.Body) != want {
				t.Fatalf("final %d %q, want %q", res.Status, res.Body, want)
			}
			var at []time.Duration
			for _, in := range res.Interims {
				if in.Raw != harness.BareProcessing {
					t.Fatalf("interim %q, want only bare 102s", in.Raw)
				}
				at = append(at, in.At)
			}
			checkInterimsAfterBody(t, at, lastWrite)
		})
	}
}

// checkInterimsAfterBody fails the test if any 102 arrived before the last
// piece of the body began to be written, or if none came after it.
func checkInterimsAfterBody(t *testing.T, at []time.Duration, lastWrite time.Duration) {
	t.Helper()
	t.Logf("last piece of the body written at %v; 102s at %v", lastWrite.Round(time.Millisecond), at)
	if lastWrite < uploadSpread/2 {
		t.Fatalf("the upload took %v, not spread over %v: the test proves nothing", lastWrite, uploadSpread)
	}
	for i, a := range at {
		if a < lastWrite {
			t.Fatalf("102 number %d arrived at %v, before the last of the body was sent at %v", i+1, a, lastWrite)
		}
	}
	if len(at) == 0 {
		t.Fatalf("no 102 after the body was in, while the handler worked for %v", 5*gateDelay)
	}
}

// slowReader hands out a body in pieces, one every pause, and notes when
// it handed out the last piece.
type slowReader struct {
	body   []byte
	piece  int
	pause  time.Duration
	start  time.Time
	mu     sync.Mutex
	lastAt time.Duration
}

func newSlowReader(body []byte) *slowReader {
	return &slowReader{body: body, piece: (len(body) + uploadPieces - 1) / uploadPieces, pause: uploadSpread / uploadPieces, start: time.Now()}
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.body) == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	n := copy(p[:min(len(p), r.piece)], r.body)
	r.body = r.body[n:]
	if len(r.body) == 0 {
		r.mu.Lock()
		r.lastAt = time.Since(r.start)
		r.mu.Unlock()
	}
	return n, nil
}

func (r *slowReader) last() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastAt
}

func TestNoInterimWhileBodyArrivesHTTP2AndHTTP3(t *testing.T) {
	harness.SetBehaviour(t, "upload", readAllThenWork)
	_, tlsPort := harness.StartCaddy(t, gateSite)
	h3, closeH3 := harness.H3Client()
	defer closeH3()
	body, want := uploadBody(256 << 10)
	for _, tc := range []struct {
		name, proto string
		client      *http.Client
	}{
		{"HTTP/2", "HTTP/2.0", harness.H2Client()},
		{"HTTP/3", "HTTP/3.0", h3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newSlowReader(body)
			var mu sync.Mutex
			var at []time.Duration
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
				if code == http.StatusProcessing {
					mu.Lock()
					at = append(at, time.Since(src.start))
					mu.Unlock()
				}
				return nil
			}}
			// No Content-Length: the length is unknown to the server,
			// which is how streamed uploads arrive.
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "PUT", fmt.Sprintf("https://127.0.0.1:%d/up", tlsPort), src)
			res, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.Proto != tc.proto || res.StatusCode != 200 || string(got) != want {
				t.Fatalf("got %s %d %q (%v), want %q", res.Proto, res.StatusCode, got, err, want)
			}
			mu.Lock()
			defer mu.Unlock()
			checkInterimsAfterBody(t, at, src.last())
		})
	}
}

// TestHandlerThatStopsReadingGetsNoInterim: a handler that reads half the
// body and then works gets no 102 at all, on HTTP/1.1 and HTTP/2: for all
// it knows the client is still sending.
func TestHandlerThatStopsReadingGetsNoInterim(t *testing.T) {
	harness.SetBehaviour(t, "upload", func(w http.ResponseWriter, r *http.Request) error {
		if _, err := io.CopyN(io.Discard, r.Body, r.ContentLength/2); err != nil {
			return err
		}
		time.Sleep(5 * gateDelay)
		_, err := io.WriteString(w, "half")
		return err
	})
	port, tlsPort := harness.StartCaddy(t, gateSite)
	body, _ := uploadBody(64 << 10)

	res := harness.RawRequest(t, harness.Loopback(port), fmt.Sprintf("POST /up HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
	if res.Status != 200 || string(res.Body) != "half" || len(res.Interims) != 0 {
		t.Fatalf("HTTP/1.1: %d %q after %d interims\n%.500s", res.Status, res.Body, len(res.Interims), res.Wire)
	}

	req, _ := http.NewRequest("POST", fmt.Sprintf("https://127.0.0.1:%d/up", tlsPort), bytes.NewReader(body))
	s, err := harness.TracedDo(t, harness.H2Client(), req)
	if err != nil {
		t.Fatal(err)
	}
	if s.Proto != "HTTP/2.0" || s.Status != 200 || string(s.Body) != "half" || len(s.Interims) != 0 {
		t.Fatalf("HTTP/2: %s %d %q after interims %+v", s.Proto, s.Status, s.Body, s.Interims)
	}
}

// TestRequestWithoutBodyIsInAtOnce: a GET, and a POST with Content-Length
// 0, get their first 102 after the delay, on every protocol, though their
// handler never reads a body.
func TestRequestWithoutBodyIsInAtOnce(t *testing.T) {
	harness.SetBehaviour(t, "upload", harness.SleepThen(5*gateDelay, "done"))
	port, tlsPort := harness.StartCaddy(t, gateSite)
	h3, closeH3 := harness.H3Client()
	defer closeH3()
	secure := fmt.Sprintf("https://127.0.0.1:%d/", tlsPort)
	for _, tc := range []struct {
		name, url string
		client    *http.Client
	}{
		{"HTTP/1.1", fmt.Sprintf("http://127.0.0.1:%d/", port), harness.H1Client()},
		{"HTTP/2", secure, harness.H2Client()},
		{"HTTP/3", secure, h3},
	} {
		for _, method := range []string{"GET", "POST"} {
			t.Run(tc.name+"/"+method, func(t *testing.T) {
				// A nil body: Go's clients send a POST with
				// Content-Length 0 then, quic-go's too (with
				// http.NoBody it sends no length at all, which the
				// server cannot tell from a streamed upload).
				req, _ := http.NewRequest(method, tc.url, nil)
				s, err := harness.TracedDo(t, tc.client, req)
				if err != nil {
					t.Fatal(err)
				}
				if s.Status != 200 || string(s.Body) != "done" || s.Count(http.StatusProcessing) == 0 {
					t.Fatalf("%d %q after interims %+v", s.Status, s.Body, s.Interims)
				}
			})
		}
	}
}
