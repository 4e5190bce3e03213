package processing

// Mixed stress: many requests at once over HTTP/1.1 (raw and Go's client,
// cleartext and TLS), h2c, HTTP/2 and HTTP/3; fast and slow; with and
// without uploads, with and without Expect: 100-continue; through `encode
// gzip` and `header`; with delay and interval of 1 ms so that 102s land at
// every point of every request. Every body is checked by hash, every
// interim response is checked field by field (on the wire for raw
// HTTP/1.1), and the 102s the clients saw add up to what the module sent.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"github.com/quic-go/quic-go/http3"
)

// stressBody is the deterministic response body for seed: letters from a
// 16-symbol alphabet, so gzip has work to do but cannot hide a wrong byte.
func stressBody(seed uint64, size int) []byte {
	const alphabet = "abcdefghijklmnop"
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, size)
	var bits uint64
	for i := range b {
		if i%16 == 0 {
			bits = rng.Uint64()
		}
		b[i] = alphabet[bits&15]
		bits >>= 4
	}
	return b
}

// stressBehaviour hashes the upload, sets fields of its own (which no 102
// may carry), works for sleep ms, then writes the body for seed in chunks
// with a flush after each.
func stressBehaviour(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	size, _ := strconv.Atoi(q.Get("size"))
	sleep, _ := strconv.Atoi(q.Get("sleep"))
	chunks, _ := strconv.Atoi(q.Get("chunks"))
	seed, _ := strconv.ParseUint(q.Get("seed"), 10, 64)
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		return err
	}
	w.Header().Set("X-Secret", "final-only")
	w.Header().Set("X-Upload", fmt.Sprintf("%d:%x", n, sum.Sum(nil)))
	w.Header().Set("Content-Type", "text/plain")
	select {
	case <-time.After(time.Duration(sleep) * time.Millisecond):
	case <-r.Context().Done():
		return r.Context().Err()
	}
	body := stressBody(seed, size)
	if chunks < 1 {
		chunks = 1
	}
	step := (len(body) + chunks - 1) / chunks
	for len(body) > 0 {
		part := body[:min(step, len(body))]
		body = body[len(part):]
		if _, err := w.Write(part); err != nil {
			return err
		}
		if err := http.NewResponseController(w).Flush(); err != nil {
			return err
		}
	}
	return nil
}

// stressCase is one request of the mix.
type stressCase struct {
	client   string // raw-h1, raw-h1-keepalive (3 requests), h1, h1-tls, h2c, h2, h3
	size     int
	sleepMS  int
	chunks   int
	seed     uint64
	upload   int
	expect   bool // send Expect: 100-continue with the upload
	gzipWant bool // the client asks for gzip (raw client only; Go clients always do)
}

func (c stressCase) target() string {
	return fmt.Sprintf("/?size=%d&sleep=%d&chunks=%d&seed=%d", c.size, c.sleepMS, c.chunks, c.seed)
}

// stressOutcome is what a client checked, for the totals.
type stressOutcome struct {
	interims102 int
}

func TestMixedStressAllProtocols(t *testing.T) {
	harness.LeakCheck(t)
	total := harness.EnvCount(t, "STRESS_REQUESTS", 1600) // about 2000 HTTP requests: keep-alive cases send three
	const concurrency = 120
	// minSlow102 is the least mean count of 102s for the requests whose
	// handler works 50 ms: about 49 are due at a 1 ms interval, but with
	// 120 requests at once under -race on a small shared machine many
	// come late. At least one each on average proves they flowed.
	const minSlow102 = 1
	harness.SetBehaviour(t, "stress", stressBehaviour)
	// HTTP/3 requests get at most 4 102s: quic-go's client gives up after 5.
	port, tlsPort := harness.StartCaddy(t, harness.ProtocolSites(`
	@h3 protocol http/3
	processing @h3 {
		delay 1ms
		interval 1ms
		max 4
		header X-Progress "{http.processing.count}"
	}
	@noth3 not protocol http/3
	processing @noth3 {
		delay 1ms
		interval 1ms
		header X-Progress "{http.processing.count}"
	}
	encode gzip
	header X-Site stress
	test_work stress
`))

	clients := stressClients()
	defer clients.close()
	plain := fmt.Sprintf("http://127.0.0.1:%d", port)
	secure := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)

	rng := rand.New(rand.NewPCG(1, 2))
	kinds := []string{"raw-h1", "raw-h1-keepalive", "h1", "h1-tls", "h2c", "h2", "h2", "h3"}
	// Sizes stay small: under -race every byte through gzip and sha256
	// costs about twenty times more, and the 102s are the point here.
	sizes := []int{0, 100, 600, 4 << 10, 16 << 10, 48 << 10}
	sleeps := []int{0, 1, 5, 20, 50}
	uploads := []int{0, 0, 1 << 10, 16 << 10}
	cases := make([]stressCase, total)
	for i := range cases {
		c := stressCase{
			client:   kinds[rng.IntN(len(kinds))],
			size:     sizes[rng.IntN(len(sizes))],
			sleepMS:  sleeps[rng.IntN(len(sleeps))],
			chunks:   1 + rng.IntN(4),
			seed:     uint64(i),
			upload:   uploads[rng.IntN(len(uploads))],
			gzipWant: rng.IntN(2) == 0,
		}
		c.expect = c.upload > 0 && rng.IntN(2) == 0
		if c.client == "h3" {
			c.expect = false // quic-go's client has no Expect support
		}
		cases[i] = c
	}

	sentBefore := harness.InterimsSent(t)
	start := time.Now()
	var (
		wg        sync.WaitGroup
		seen102   atomic.Int64
		slow102   atomic.Int64 // 102s of 50 ms requests without upload, not HTTP/3
		slowN     atomic.Int64
		failures  atomic.Int64
		perClient sync.Map // client kind → *atomic.Int64
	)
	sem := make(chan struct{}, concurrency)
	for i, c := range cases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if failures.Load() > 5 {
				return // the first failures say it all
			}
			var out stressOutcome
			var err error
			switch c.client {
			case "raw-h1":
				out, err = stressRaw(harness.Loopback(port), c, 1)
			case "raw-h1-keepalive":
				out, err = stressRaw(harness.Loopback(port), c, 3)
			default:
				base := secure
				if c.client == "h1" || c.client == "h2c" {
					base = plain
				}
				out, err = stressGo(clients.pick(c), base, c)
			}
			if err != nil {
				failures.Add(1)
				t.Errorf("request %d %+v: %v", i, c, err)
				return
			}
			requests := int64(1)
			if c.client == "raw-h1-keepalive" {
				requests = 3
			}
			seen102.Add(int64(out.interims102))
			if c.sleepMS == 50 && c.client != "h3" && c.upload == 0 {
				slow102.Add(int64(out.interims102))
				slowN.Add(requests)
			}
			v, _ := perClient.LoadOrStore(c.client, new(atomic.Int64))
			v.(*atomic.Int64).Add(requests)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if t.Failed() {
		return
	}
	// Every 102 the module sent reached a client, and no client saw one
	// the module did not count. That also holds when nothing was sent,
	// so the 102s must be there too (see minSlow102).
	if sent := harness.InterimsSent(t) - sentBefore; int64(sent) != seen102.Load() {
		t.Errorf("module sent %v 102s, clients saw %d", sent, seen102.Load())
	}
	if seen102.Load() == 0 {
		t.Errorf("no 102 in %d requests", total)
	}
	if slowN.Load() > 0 {
		if mean := float64(slow102.Load()) / float64(slowN.Load()); mean < minSlow102 {
			t.Errorf("%.1f 102s per 50 ms request on average, want at least %d", mean, minSlow102)
		}
	}
	var mix []string
	requests := int64(0)
	for _, k := range []string{"raw-h1", "raw-h1-keepalive", "h1", "h1-tls", "h2c", "h2", "h3"} {
		if v, ok := perClient.Load(k); ok {
			mix = append(mix, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
			requests += v.(*atomic.Int64).Load()
		}
	}
	t.Logf("%d requests (%s) at concurrency %d in %v: %d 102s checked; %.1f 102s per 50 ms request",
		requests, strings.Join(mix, ", "), concurrency, elapsed.Round(time.Millisecond), seen102.Load(),
		float64(slow102.Load())/float64(max(slowN.Load(), 1)))
	relAssertNoMoreInterims(t, 50*time.Millisecond)
}

// stressCheckFinal checks what every client must get: the body for the
// seed, the upload's hash, the site's field and the handler's fields.
func stressCheckFinal(c stressCase, status int, h http.Header, body []byte, upload []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d", status)
	}
	if got, want := sha256.Sum256(body), sha256.Sum256(stressBody(c.seed, c.size)); got != want || len(body) != c.size {
		return fmt.Errorf("body of %d bytes (want %d) has the wrong hash", len(body), c.size)
	}
	sum := sha256.Sum256(upload)
	if want := fmt.Sprintf("%d:%s", len(upload), hex.EncodeToString(sum[:])); h.Get("X-Upload") != want {
		return fmt.Errorf("server saw upload %q, want %q", h.Get("X-Upload"), want)
	}
	if h.Get("X-Site") != "stress" || h.Get("X-Secret") != "final-only" {
		return fmt.Errorf("final response lost fields: %v", h)
	}
	return nil
}

// stressRaw plays c over a raw HTTP/1.1 connection, checking every byte,
// rounds times on the same connection: a 102 that outlived its request
// would arrive before the next request's 102s and break their numbering.
func stressRaw(address string, c stressCase, rounds int) (stressOutcome, error) {
	var out stressOutcome
	conn, err := harness.OpenRaw(address)
	if err != nil {
		return out, err
	}
	defer conn.Close()
	upload := stressBody(c.seed+1<<32, c.upload)
	for round := range rounds {
		var req bytes.Buffer
		fmt.Fprintf(&req, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n", c.target(), c.upload)
		if round == rounds-1 {
			req.WriteString("Connection: close\r\n")
		}
		if c.gzipWant {
			req.WriteString("Accept-Encoding: gzip\r\n")
		}
		if c.expect {
			req.WriteString("Expect: 100-continue\r\n")
		}
		req.WriteString("\r\n")
		if c.expect {
			// The client waits for 100 Continue, as curl would, and the
			// server must send nothing else (no 102) before it.
			if _, err := conn.Write(req.Bytes()); err != nil {
				return out, err
			}
			line, rest, err := conn.Head()
			if err != nil || line != "HTTP/1.1 100 Continue" || len(rest) != 0 {
				return out, fmt.Errorf("round %d: want a bare 100 Continue first, got %q %v %v", round, line, rest, err)
			}
			req.Reset()
		}
		req.Write(upload)
		conn.Start = time.Now() // each round's interims are timed from its own request
		if _, err := conn.Write(req.Bytes()); err != nil {
			return out, err
		}
		res, err := conn.Response(false)
		if err != nil {
			return out, fmt.Errorf("round %d: %v\n%q", round, err, res.Wire)
		}
		for i, in := range res.Interims {
			if in.Code != http.StatusProcessing {
				return out, fmt.Errorf("round %d: interim %d after the 100: %q", round, in.Code, in.Raw)
			}
			out.interims102++
			if want := harness.Progress102(i + 1); in.Raw != want {
				return out, fmt.Errorf("round %d: 102 is %q, want %q", round, in.Raw, want)
			}
		}
		body := res.Body
		switch ce := res.Header.Get("Content-Encoding"); {
		case ce == "gzip" && c.gzipWant:
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return out, fmt.Errorf("gzip: %v", err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				return out, fmt.Errorf("gzip: %v", err)
			}
		case ce != "":
			return out, fmt.Errorf("Content-Encoding %q, asked for gzip: %v", ce, c.gzipWant)
		}
		if err := stressCheckFinal(c, res.Status, res.Header, body, upload); err != nil {
			return out, fmt.Errorf("round %d: %v", round, err)
		}
	}
	if after, _ := conn.Rest(); len(after) != 0 {
		return out, fmt.Errorf("bytes after the final response: %q", after)
	}
	return out, nil
}

// stressGo plays c with a Go client and checks each 1xx it reports.
func stressGo(client *http.Client, base string, c stressCase) (stressOutcome, error) {
	var out stressOutcome
	upload := stressBody(c.seed+1<<32, c.upload)
	var (
		mu      sync.Mutex
		n102    int
		n100    int
		trouble error
	)
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case code == http.StatusContinue && n102 == 0 && n100 == 0:
				n100++
			case code == http.StatusProcessing:
				n102++
				if err := harness.CheckProgressHeader(n102, http.Header(h)); err != nil && trouble == nil {
					trouble = err
				}
			default:
				if trouble == nil {
					trouble = fmt.Errorf("unexpected interim %d after %d 102s", code, n102)
				}
			}
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, trace)
	var body io.Reader = http.NoBody
	if c.upload > 0 {
		body = bytes.NewReader(upload)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+c.target(), body)
	if err != nil {
		return out, err
	}
	if c.expect {
		// Go's transports send Expect only when asked, and then wait for
		// the 100 up to ExpectContinueTimeout.
		req.Header.Set("Expect", "100-continue")
	}
	res, err := client.Do(req)
	if err != nil {
		return out, err
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		return out, err
	}
	mu.Lock()
	defer mu.Unlock()
	if trouble != nil {
		return out, trouble
	}
	if err := stressCheckFinal(c, res.StatusCode, res.Header, got, upload); err != nil {
		return out, err
	}
	out.interims102 = n102
	return out, nil
}

// stressClientSet holds one Go client per kind and per Expect setting.
type stressClientSet struct {
	byKind  map[string]*http.Client
	expects map[string]*http.Client
	h3tr    *http3.Transport
}

func stressClients() *stressClientSet {
	s := &stressClientSet{byKind: map[string]*http.Client{}, expects: map[string]*http.Client{}}
	mk := func(set func(*http.Protocols), tlsOn, expect bool) *http.Client {
		tr := &http.Transport{MaxConnsPerHost: 16, MaxIdleConnsPerHost: 16}
		if tlsOn {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		if expect {
			tr.ExpectContinueTimeout = 30 * time.Second
		}
		tr.Protocols = new(http.Protocols)
		set(tr.Protocols)
		return &http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	for _, expect := range []bool{false, true} {
		m := s.byKind
		if expect {
			m = s.expects
		}
		m["h1"] = mk(func(p *http.Protocols) { p.SetHTTP1(true) }, false, expect)
		m["h1-tls"] = mk(func(p *http.Protocols) { p.SetHTTP1(true) }, true, expect)
		m["h2c"] = mk(func(p *http.Protocols) { p.SetUnencryptedHTTP2(true) }, false, expect)
		m["h2"] = mk(func(p *http.Protocols) { p.SetHTTP2(true) }, true, expect)
	}
	s.h3tr = &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}}
	s.byKind["h3"] = &http.Client{Transport: s.h3tr, Timeout: 60 * time.Second}
	return s
}

func (s *stressClientSet) pick(c stressCase) *http.Client {
	if c.expect {
		return s.expects[c.client]
	}
	return s.byKind[c.client]
}

func (s *stressClientSet) close() {
	for _, m := range []map[string]*http.Client{s.byKind, s.expects} {
		for k, c := range m {
			if k != "h3" {
				c.Transport.(*http.Transport).CloseIdleConnections()
			}
		}
	}
	s.h3tr.Close()
}
