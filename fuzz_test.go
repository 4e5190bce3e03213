package processing

// Fuzz targets for everything the module reads from outside: the Caddyfile
// directive, the JSON config and the request header fields that decide
// whether and when 102s are sent (Prefer, Expect, the protocol version).
// .ci/fuzz.sh runs each for 30 s; without -fuzz, `go test` runs the seeds.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzCaddyfileDirective feeds arbitrary text after the directive name.
// Whatever it is, the parser must not panic; what it refuses must be refused
// with a Caddyfile position; what it accepts must be a config that Validate
// accepts too, and that survives a JSON round trip unchanged (the adapter
// hands Caddy JSON, so that is the form that runs).
func FuzzCaddyfileDirective(f *testing.F) {
	for _, seed := range []string{
		"",
		"20s",
		"1ms",
		"0",
		"-1s",
		"1s 2s",
		"soon",
		"{\n}",
		"{\n\tdelay 1ms\n\tinterval 1ms\n\tmax 3\n\topt_in\n}",
		"{\n\theader X-Progress \"{http.processing.count} {http.processing.elapsed}\"\n}",
		"{\n\theader X-A a\n\theader X-A b\n\theader x-a c\n}",
		"{\n\theader X-A\n}",
		"{\n\theader \"X A\" b\n}",
		"{\n\theader Content-Length 1\n}",
		"{\n\theader X-A \"a\x01b\"\n}",
		"{\n\tmax -1\n}",
		"{\n\tmax 99999999999999999999\n}",
		"{\n\tinterval 1s\n\tinterval 1s\n}",
		"1s {\n\tinterval 1s\n}",
		"{\n\tdelay 1d\n}",
		"{\n\tfoo bar\n}",
		"{\n\theader X-A b {\n\t\tnested\n\t}\n}",
		"{\n\topt_in {\n\t}\n}",
		"{ delay 1s }",
		"{\n\tmax 1 {\n\t}\n}",
		"{\n\tasync {\n\t\twait 1s\n\t\tmonitor /jobs\n\t\tmax_body 1MiB\n\t\tmax_jobs 3\n\t}\n}",
		"{\n\tasync {\n\t\tmax_stored 0\n\t}\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		tokens, err := caddyfile.Tokenize([]byte("processing "+input), "Caddyfile")
		if err != nil {
			return // not Caddyfile syntax at all: the lexer's business
		}
		var h Handler
		err = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
		if err != nil {
			if !strings.Contains(err.Error(), ", at Caddyfile:") {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("Caddyfile accepted %q but Validate refuses it: %v", input, err)
		}
		if h.Interval < 0 || h.Delay < 0 || h.Max < 0 {
			t.Fatalf("accepted negative values: %+v", h)
		}
		raw, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		var back Handler
		if err := caddy.StrictUnmarshalJSON(raw, &back); err != nil {
			t.Fatalf("JSON %s does not decode: %v", raw, err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("JSON %s does not validate: %v", raw, err)
		}
		if !reflect.DeepEqual(normalisedHandler(h), normalisedHandler(back)) {
			t.Fatalf("JSON round trip changed the config:\n%+v\n%+v", h, back)
		}
	})
}

// normalisedHandler keeps only the JSON-visible fields, with a nil and an
// empty header map counted the same.
func normalisedHandler(h Handler) Handler {
	n := Handler{Interval: h.Interval, Delay: h.Delay, Max: h.Max, OptIn: h.OptIn, Async: h.Async}
	if len(h.Header) > 0 {
		n.Header = h.Header
	}
	return n
}

// FuzzJSONConfig feeds arbitrary JSON as the handler's fields. What Caddy
// decodes and Validate accepts must provision into a handler that can run:
// positive interval and delay, and 102 fields that are safe on the wire.
func FuzzJSONConfig(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"interval": "20s"}`,
		`{"interval": 1000000, "delay": 1000000, "max": 3, "opt_in": true}`,
		`{"interval": "-1s"}`,
		`{"delay": -1}`,
		`{"interval": "1d"}`,
		`{"max": -1}`,
		`{"max": 1e3}`,
		`{"header": {"X-Progress": ["{http.processing.count}"]}}`,
		`{"header": {"X-Progress": []}}`,
		`{"header": {"x-a": ["a", "b"], "X-A": ["c"]}}`,
		`{"header": {"X A": ["b"]}}`,
		`{"header": {"X-A": ["a\r\nX-B: c"]}}`,
		`{"header": {"Upgrade": ["h2c"]}}`,
		`{"header": {"X-A": ["{http.request.uri}"]}}`,
		`{"header": null}`,
		`{"intervall": "1s"}`,
		`[]`,
		`{"interval": "9999999999h"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		var h Handler
		if err := caddy.StrictUnmarshalJSON(input, &h); err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if h.Async != nil {
			// Async needs a config's storage to provision, which this
			// bare context has not; async_config_test.go loads async
			// configs through caddy.Validate instead.
			return
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("valid config %s does not provision: %v", input, err)
		}
		if h.interval <= 0 || h.delay <= 0 {
			t.Fatalf("config %s provisions interval %v, delay %v", input, h.interval, h.delay)
		}
		// Every field a 102 will carry, written as Go's server writes it,
		// must be exactly one header line per value: nothing injected.
		var buf bytes.Buffer
		for _, fld := range h.fields {
			for _, v := range fld.values {
				buf.Reset()
				(http.Header{fld.name: {v}}).Write(&buf)
				if strings.Count(buf.String(), "\r\n") != 1 || !strings.HasPrefix(buf.String(), fld.name+": ") {
					t.Fatalf("config %s gives the header line %q", input, buf.String())
				}
			}
		}
	})
}

// FuzzRequestHeaders sends requests with fuzzed Prefer and Expect values,
// protocol version, method and body over raw TCP to one real Caddy. Whatever
// arrives, the server stays up, and each response is well formed: interim
// responses only before the final one, every 102 exactly the configured
// line and nothing else, none at all to HTTP/1.0, a 100 Continue never after
// a 102, and the handler's own fields only on the final response.
func FuzzRequestHeaders(f *testing.F) {
	harness.SetBehaviour(f, "fuzz_headers", func(w http.ResponseWriter, r *http.Request) error {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return err
		}
		w.Header().Set("X-Secret", "final-only")
		select {
		case <-time.After(time.Duration(len(r.URL.Path)%5) * time.Millisecond):
		case <-r.Context().Done():
			return r.Context().Err()
		}
		_, err = fmt.Fprintf(w, "ok:%d", n)
		return err
	})
	port, _ := harness.StartCaddy(f, `
http://127.0.0.1:{PORT} {
	processing {
		delay 1ms
		interval 1ms
		max 20
		header X-Progress "{http.processing.count}"
	}
	test_work fuzz_headers
}
`)

	type seed struct {
		method, path, proto, prefer, expect string
		bodyLen                             uint16
	}
	for _, s := range []seed{
		{"GET", "/", "HTTP/1.1", "", "", 0},
		{"GET", "/abcd", "HTTP/1.1", "", "", 0},
		{"GET", "/ab", "HTTP/1.0", "processing", "", 0},
		{"POST", "/abc", "HTTP/1.1", "processing", "100-continue", 100},
		{"POST", "/abc", "HTTP/1.0", "", "100-continue", 10},
		{"PUT", "/a", "HTTP/1.1", "respond-async, wait=5, processing", "100-Continue", 5000},
		{"POST", "/", "HTTP/1.1", "PROCESSING;x=1", "100-continue, foo", 1},
		{"POST", "/", "HTTP/1.1", "", "100-continue", 0},
		{"POST", "/", "HTTP/1.1", "", "something-else", 3},
		{"HEAD", "/abcd", "HTTP/1.1", "processing", "", 0},
		{"GET", "/", "HTTP/1.2", "processing", "", 0},
		{"GET", "/", "HTTP/2.0", "processing", "", 0},
		{"GET", "/", "HTTP/0.9", "", "", 0},
		{"GET", "/", "HTTP/1.", "", "", 0},
		{"GET", "/", "http/1.1", "", "", 0},
		{"GET", "/", "HTTP/01.1", "", "", 0},
		{"OPTIONS", "*", "HTTP/1.1", "processing", "", 0},
		{"GET", "/", "HTTP/1.1", "\x00processing", "", 0},
		{"GET", "/", "HTTP/1.1", ",,,;=,processing=", "", 0},
	} {
		f.Add(s.method, s.path, s.proto, s.prefer, s.expect, s.bodyLen)
	}

	f.Fuzz(func(t *testing.T, method, path, proto, prefer, expect string, bodyLen uint16) {
		// One request per connection: line breaks would start a second
		// request or header of the fuzzer's making, which is Go's parser's
		// business, not this module's.
		clean := strings.NewReplacer("\r", "", "\n", "")
		method, path, proto = clean.Replace(method), clean.Replace(path), clean.Replace(proto)
		prefer, expect = clean.Replace(prefer), clean.Replace(expect)
		bodyLen %= 20000
		if strings.ContainsAny(method+path+proto, " \t") || method == "" || path == "" {
			return // another request line shape entirely
		}
		var req strings.Builder
		fmt.Fprintf(&req, "%s %s %s\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, path, proto)
		if prefer != "" {
			fmt.Fprintf(&req, "Prefer: %s\r\n", prefer)
		}
		if expect != "" {
			fmt.Fprintf(&req, "Expect: %s\r\n", expect)
		}
		fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n", bodyLen)
		req.Write(bytes.Repeat([]byte{'b'}, int(bodyLen)))

		// The server may answer and close before all of a bad request is
		// written: what it sent is checked below.
		res, err := harness.RawExchange(harness.Loopback(port), req.String(), harness.ReadToClose)
		var netErr *net.OpError
		if errors.As(err, &netErr) && netErr.Op == "dial" {
			t.Fatalf("server is down: %v", err)
		}
		if err != nil && !errors.Is(err, io.EOF) && !harness.IsConnReset(err) {
			t.Fatalf("malformed response to %q: %v\n%q", req.String(), err, res.Wire)
		}
		if res.Status == 0 {
			if len(res.Wire) != 0 || len(res.Interims) != 0 {
				t.Fatalf("no final response but %q", res.Wire)
			}
			return
		}
		if len(res.After) > 0 && method != "HEAD" {
			t.Fatalf("bytes after the final response to %q: %q\nwhole: %q", req.String(), res.After, res.Wire)
		}

		major, minor, protoOK := http.ParseHTTPVersion(proto)
		http10 := protoOK && major == 1 && minor == 0
		sent102 := 0
		for _, in := range res.Interims {
			switch in.Code {
			case http.StatusProcessing:
				sent102++
				if want := harness.Progress102(sent102); in.Raw != want {
					t.Fatalf("102 number %d is %q, want %q", sent102, in.Raw, want)
				}
			case http.StatusContinue:
				if sent102 > 0 {
					t.Fatalf("100 Continue after a 102: %q", res.Wire)
				}
				if in.Raw != "HTTP/1.1 100 Continue\r\n\r\n" {
					t.Fatalf("100 is %q", in.Raw)
				}
			default:
				t.Fatalf("unexpected interim %d: %q", in.Code, res.Wire)
			}
		}
		if http10 && len(res.Interims) > 0 {
			t.Fatalf("HTTP/1.0 request got interim responses: %q", res.Wire)
		}
		if sent102 > 20 {
			t.Fatalf("%d 102s, more than max 20", sent102)
		}
		// Go's server answers OPTIONS * itself, without Caddy.
		if res.Status == http.StatusOK && !(method == "OPTIONS" && path == "*") {
			if res.Header.Get("X-Secret") != "final-only" {
				t.Fatalf("final response lost the handler's field: %q", res.Wire)
			}
			if method != "HEAD" && string(res.Body) != fmt.Sprintf("ok:%d", bodyLen) {
				t.Fatalf("body %q for a %d-byte upload", res.Body, bodyLen)
			}
		}
	})
}
