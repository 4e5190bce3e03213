package processing

// WebDAV behind processing, as users run it: github.com/mholt/caddy-webdav
// with `order webdav before file_server` and no order line for processing.
// The module proxy here does not serve that plugin, so harness.WebDAVStandIn
// does what it does, configured with the same Caddyfile syntax.

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

// ---- running a WebDAV site -------------------------------------------------

// webdavSite is the Caddyfile a WebDAV user writes, with processing at a
// short delay and interval in front of it. {ROOT} is the served folder.
// Plain HTTP, for the raw clients; the HTTP/2 test swaps in an https
// address.
const webdavSite = `
http://127.0.0.1:{PORT} {
	root * {ROOT}
	processing {
		delay 50ms
		interval 50ms
	}
	webdav /dav/* {
		prefix /dav
	}
	file_server
}
`

// davInterval is the interval of webdavSite.
const davInterval = 50 * time.Millisecond

// ---- raw exchanges ---------------------------------------------------------

// davCheckInterimsThenFinal asserts the byte-level shape of a response read
// with harness.ReadToClose: only bare `102 Processing` interims, all of them before
// the one final status line, and nothing after the final response.
func davCheckInterimsThenFinal(t testing.TB, ex *harness.RawResponse, status int) {
	t.Helper()
	if ex.Status != status {
		t.Fatalf("final status %d, want %d; wire:\n%.2000s", ex.Status, status, ex.Wire)
	}
	for i, in := range ex.Interims {
		if in.Code != 102 || in.Raw != harness.BareProcessing {
			t.Fatalf("interim %d is %q, want a bare 102", i, in.Raw)
		}
	}
	if n := bytes.Count(ex.Wire, []byte("HTTP/1.1 102 Processing\r\n")); n != len(ex.Interims) {
		t.Fatalf("%d 102 status lines on the wire, %d parsed before the final status", n, len(ex.Interims))
	}
	if at := len(ex.Interims) * len(harness.BareProcessing); !bytes.HasPrefix(ex.Wire[at:], fmt.Appendf(nil, "HTTP/1.1 %d ", status)) {
		t.Fatalf("the final status line does not follow the %d interims; wire:\n%.2000s", len(ex.Interims), ex.Wire)
	}
	// The raw reader stops where the final response's framing ends.
	if len(ex.After) != 0 {
		t.Fatalf("%d bytes after the final response: %.200q", len(ex.After), ex.After)
	}
	davCheckRhythm(t, ex)
}

// ---- measured sizes --------------------------------------------------------

// Trees start at a size measured on the project's shared 2-core machine to
// take several 50 ms intervals (COPY of 2000 4 KiB files: 0.3 to 5.4 s,
// DELETE 0.2 to 0.7 s; the tests log each run), and double until the
// request really does outlast davMinInterims intervals on the machine at
// hand.
const (
	davStartFiles  = 2000
	davFileSize    = 4096
	davMaxFiles    = 32000
	davMinInterims = 3
)

// davGrowing runs op on trees of growing size until it outlasts
// davMinInterims intervals. build makes the tree of n files; op runs the
// request and reports how many 102s the client saw.
func davGrowing(t *testing.T, what string, build func(n int), op func() (interims int, elapsed time.Duration)) (files int) {
	t.Helper()
	for n := davStartFiles; ; n *= 2 {
		build(n)
		interims, elapsed := op()
		t.Logf("%s of %d files of %d bytes: %v, %d 102s", what, n, davFileSize, elapsed.Round(time.Millisecond), interims)
		if interims >= davMinInterims {
			return n
		}
		if n*2 > davMaxFiles {
			t.Fatalf("%s of %d files still saw only %d 102s", what, n, interims)
		}
	}
}

// davCopySource is the tree builder of the COPY tests for davGrowing: n
// files under root/src, and no root/dst left from the last try.
func davCopySource(t testing.TB, root string) func(n int) {
	return func(n int) {
		os.RemoveAll(filepath.Join(root, "src"))
		os.RemoveAll(filepath.Join(root, "dst"))
		harness.MakeTree(t, filepath.Join(root, "src"), n, davFileSize)
	}
}

// ---- tests -----------------------------------------------------------------

// davRequest is a request head with Connection: close; PROPFIND and LOCK
// heads are left open for the caller's Content-Length and body.
func davRequest(method, port, path string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n", method, path, port)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if method != "PROPFIND" && method != "LOCK" {
		b.WriteString("\r\n")
	}
	return b.String()
}

func TestWebDAVCopyTreeGets102sThen201AndACompleteCopy(t *testing.T) {
	root := t.TempDir()
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)
	addr := harness.Loopback(port)
	var ex *harness.RawResponse
	davGrowing(t, "COPY", davCopySource(t, root), func() (int, time.Duration) {
		ex = harness.RawRequest(t, addr, davRequest("COPY", p, "/dav/src/",
			"Destination: http://127.0.0.1:"+p+"/dav/dst/", "Depth: infinity"), harness.ReadToClose)
		davCheckInterimsThenFinal(t, ex, http.StatusCreated)
		return len(ex.Interims), ex.Elapsed
	})
	if string(ex.Body) != "Created" {
		t.Fatalf("body %q", ex.Body)
	}
	harness.SameTree(t, harness.TreeDigest(t, filepath.Join(root, "src")), harness.TreeDigest(t, filepath.Join(root, "dst")))
}

// davCheckRhythm asserts that the 102s kept to the configured rhythm: no
// more than one per interval (plus the first). Arrival times are not used:
// on a loaded machine two 102s can reach the client in one read.
func davCheckRhythm(t testing.TB, ex *harness.RawResponse) {
	t.Helper()
	if most := int(ex.Elapsed/davInterval) + 1; len(ex.Interims) > most {
		t.Fatalf("%d 102s in %v at one per %v", len(ex.Interims), ex.Elapsed, davInterval)
	}
}

// MOVE in x/net/webdav is a rename, which takes no time whatever the tree;
// what takes time is the DELETE of an existing destination that
// `Overwrite: T` asks for first (RFC 4918 §9.9.3). Both are tested: the
// long MOVE gets 102s and 204, the quick one 201 and no 102 at all.
func TestWebDAVMoveOntoLargeTreeGets102sThen204(t *testing.T) {
	root := t.TempDir()
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)
	addr := harness.Loopback(port)
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")

	harness.MakeTree(t, filepath.Join(root, "small"), 300, davFileSize)
	want := harness.TreeDigest(t, filepath.Join(root, "small"))

	// The quick MOVE: a rename onto a free name.
	ex := harness.RawRequest(t, addr, davRequest("MOVE", p, "/dav/small/", "Destination: http://127.0.0.1:"+p+"/dav/moved/"), harness.ReadToClose)
	davCheckInterimsThenFinal(t, ex, http.StatusCreated)
	t.Logf("MOVE onto a free name: %v, %d 102s", ex.Elapsed.Round(time.Millisecond), len(ex.Interims))
	// One rename(2) is done long before the 50 ms delay (1 ms measured):
	// no 102. The client's clock runs longer than the server's, so an
	// exchange shorter than the delay proves the handler was too; only a
	// machine that stalled this request past the delay may see a 102.
	if len(ex.Interims) != 0 && ex.Elapsed < davInterval {
		t.Fatalf("MOVE onto a free name took %v and got %d 102s, want none before the %v delay", ex.Elapsed, len(ex.Interims), davInterval)
	}
	if ex.Elapsed >= davInterval {
		t.Logf("the machine stalled the quick MOVE past the delay: the no-102 check did not apply")
	}
	if _, err := os.Stat(filepath.Join(root, "small")); !os.IsNotExist(err) {
		t.Fatalf("source still there after MOVE: %v", err)
	}
	harness.SameTree(t, want, harness.TreeDigest(t, filepath.Join(root, "moved")))

	// The long MOVE: onto a large existing tree, which goes first.
	davGrowing(t, "MOVE over an existing tree", func(n int) {
		os.RemoveAll(src)
		os.RemoveAll(dst)
		harness.MakeTree(t, src, 300, davFileSize) // the same bytes as want
		harness.MakeTree(t, dst, n, davFileSize)
	}, func() (int, time.Duration) {
		ex = harness.RawRequest(t, addr, davRequest("MOVE", p, "/dav/src/",
			"Destination: http://127.0.0.1:"+p+"/dav/dst/", "Overwrite: T"), harness.ReadToClose)
		davCheckInterimsThenFinal(t, ex, http.StatusNoContent)
		return len(ex.Interims), ex.Elapsed
	})
	if len(ex.Body) != 0 {
		t.Fatalf("204 with a body %q", ex.Body)
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Fatalf("source still there after MOVE: %v", err)
	}
	// Nothing of the old destination is left, and nothing is lost.
	harness.SameTree(t, want, harness.TreeDigest(t, dst))
}

func TestWebDAVDeleteLargeTreeGets102sThen204(t *testing.T) {
	root := t.TempDir()
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)
	dir := filepath.Join(root, "big")
	var ex *harness.RawResponse
	davGrowing(t, "DELETE", func(n int) {
		harness.MakeTree(t, dir, n, davFileSize)
	}, func() (int, time.Duration) {
		ex = harness.RawRequest(t, harness.Loopback(port), davRequest("DELETE", p, "/dav/big/"), harness.ReadToClose)
		davCheckInterimsThenFinal(t, ex, http.StatusNoContent)
		return len(ex.Interims), ex.Elapsed
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("tree still there after DELETE: %v", err)
	}
}

// PROPFIND commits 207 after the first entry and then streams the rest:
// whatever the 102s before it, none may appear in the stream.
func TestWebDAVPropfindInfinityStreams207WithNo102Inside(t *testing.T) {
	root := t.TempDir()
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)
	const files = 1500 // 1666 entries: 0.5 to 2.5 s of streaming
	harness.MakeTree(t, filepath.Join(root, "tree"), files, 64)
	entries := len(harness.TreeDigest(t, filepath.Join(root, "tree")))

	body := `<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>`
	ex := harness.RawRequest(t, harness.Loopback(port), davRequest("PROPFIND", p, "/dav/tree/", "Depth: infinity",
		"Content-Type: application/xml", "Content-Length: "+strconv.Itoa(len(body)))+"\r\n"+body, harness.ReadToClose)
	davCheckInterimsThenFinal(t, ex, http.StatusMultiStatus)
	t.Logf("PROPFIND Depth: infinity of %d entries: %v, %d bytes of XML, %d 102s before the 207",
		entries, ex.Elapsed.Round(time.Millisecond), len(ex.Body), len(ex.Interims))
	if ex.Header.Get("Transfer-Encoding") != "chunked" && ex.Header.Get("Content-Length") != "" {
		t.Fatalf("207 was not streamed: %v", ex.Header)
	}
	var ms struct {
		Responses []struct {
			Href string `xml:"href"`
		} `xml:"response"`
	}
	if err := xml.Unmarshal(ex.Body, &ms); err != nil {
		t.Fatalf("multistatus body does not parse: %v", err)
	}
	if len(ms.Responses) != entries {
		t.Fatalf("%d entries in the multistatus, want %d", len(ms.Responses), entries)
	}
}

// LOCK on an existing resource answers with an implicit 200 (x/net/webdav
// writes the body without WriteHeader). With `Prefer: processing` the first
// 102 goes out at once, so the lock's answer comes after a 102: the final
// status must still be 200 with the Lock-Token, and the 102 bare.
func TestWebDAVLockAndUnlockAfter102(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "doc.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)
	addr := harness.Loopback(port)
	lockBody := `<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>test</D:owner></D:lockinfo>`

	for _, prefer := range []bool{false, true} {
		t.Run(fmt.Sprintf("prefer=%v", prefer), func(t *testing.T) {
			var extra []string
			if prefer {
				extra = append(extra, "Prefer: processing")
			}
			ex := harness.RawRequest(t, addr, davRequest("LOCK", p, "/dav/doc.txt", append(extra, "Timeout: Second-60",
				"Content-Type: application/xml", "Content-Length: "+strconv.Itoa(len(lockBody)))...)+"\r\n"+lockBody, harness.ReadToClose)
			davCheckInterimsThenFinal(t, ex, http.StatusOK)
			if prefer != (len(ex.Interims) == 1) {
				t.Fatalf("prefer=%v: %d 102s before the LOCK's 200", prefer, len(ex.Interims))
			}
			token := ex.Header.Get("Lock-Token")
			if !strings.HasPrefix(token, "<") || !bytes.Contains(ex.Body, []byte("<D:locktoken><D:href>"+strings.Trim(token, "<>"))) {
				t.Fatalf("LOCK answer lacks its token: Lock-Token %q, body %s", token, ex.Body)
			}

			// The lock holds: a PUT without the token is refused.
			put := harness.RawRequest(t, addr, davRequest("PUT", p, "/dav/doc.txt", "Content-Length: 3")+"new", harness.ReadToClose)
			davCheckInterimsThenFinal(t, put, http.StatusLocked)

			ex = harness.RawRequest(t, addr, davRequest("UNLOCK", p, "/dav/doc.txt", append(extra, "Lock-Token: "+token)...), harness.ReadToClose)
			davCheckInterimsThenFinal(t, ex, http.StatusNoContent)
			if prefer != (len(ex.Interims) == 1) {
				t.Fatalf("prefer=%v: %d 102s before the UNLOCK's 204", prefer, len(ex.Interims))
			}
			put = harness.RawRequest(t, addr, davRequest("PUT", p, "/dav/doc.txt", "Content-Length: 3")+"new", harness.ReadToClose)
			davCheckInterimsThenFinal(t, put, http.StatusCreated)
		})
	}
}

// A large PUT with Expect: 100-continue, its body sent in slices slower
// than the interval: 100 Continue first (before any 102, or the client
// would never send its body), then 102s while the body arrives, then 201,
// and the stored file is the body, byte for byte.
func TestWebDAVPutLargeBodyWithExpectContinue(t *testing.T) {
	root := t.TempDir()
	port, _ := harness.StartWebDAVCaddy(t, root, webdavSite)
	p := strconv.Itoa(port)

	const slice, slices = 1 << 20, 24 // 24 MiB in 1 MiB slices every 25 ms
	body := make([]byte, slice*slices)
	for i := range body {
		body[i] = byte(i * 131 >> 8)
	}
	conn := harness.DialRawConn(t, harness.Loopback(port))
	head := davRequest("PUT", p, "/dav/big.bin", "Expect: 100-continue", "Content-Length: "+strconv.Itoa(len(body)))
	if err := conn.Send(head); err != nil {
		t.Fatal(err)
	}
	// A real client waits for the 100 before the body.
	if line, h, err := conn.Head(); err != nil || line != "HTTP/1.1 100 Continue" || len(h) != 0 {
		t.Fatalf("first head %q %v (%v), want a bare 100 Continue", line, h, err)
	}
	if wait := time.Since(conn.Start); wait > 2*time.Second {
		t.Fatalf("100 Continue took %v", wait)
	}
	for i := range slices {
		if _, err := conn.Write(body[i*slice : (i+1)*slice]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// After the 100: the 102s, the final response, and nothing after it
	// (a second 100 would show as an interim other than a bare 102).
	res, err := conn.Response(false)
	if err != nil {
		t.Fatalf("reading response: %v\n%s", err, res.Wire)
	}
	if res.After, err = conn.Rest(); err != nil {
		t.Fatal(err)
	}
	davCheckInterimsThenFinal(t, res, http.StatusCreated)
	t.Logf("PUT of %d MiB with Expect: 100-continue: %v, 100 then %d 102s", len(body)>>20, res.Elapsed.Round(time.Millisecond), len(res.Interims))
	if len(res.Interims) < davMinInterims {
		t.Fatalf("%d 102s during a %v upload", len(res.Interims), res.Elapsed)
	}
	got, err := os.ReadFile(filepath.Join(root, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("stored %d bytes differ from the %d sent", len(got), len(body))
	}
}

func TestWebDAVCopyTreeOverHTTP2(t *testing.T) {
	root := t.TempDir()
	_, tlsPort := harness.StartWebDAVCaddy(t, root, strings.Replace(webdavSite, "http://127.0.0.1:{PORT}", "https://127.0.0.1:{TLSPORT}", 1))
	base := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
	client := harness.H2Client()
	defer client.CloseIdleConnections()
	var s *harness.Seen
	davGrowing(t, "COPY over HTTP/2", davCopySource(t, root), func() (int, time.Duration) {
		req, err := http.NewRequestWithContext(harness.WithTimeout(t, 60*time.Second), "COPY", base+"/dav/src/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Destination", base+"/dav/dst/")
		start := time.Now()
		s, err = harness.TracedDo(t, client, req)
		if err != nil {
			t.Fatal(err)
		}
		if s.Proto != "HTTP/2.0" || s.Status != http.StatusCreated || string(s.Body) != "Created" {
			t.Fatalf("%s %d %q", s.Proto, s.Status, s.Body)
		}
		if s.Count(102) != len(s.Interims) {
			t.Fatalf("interims other than 102: %+v", s.Interims)
		}
		return s.Count(102), time.Since(start)
	})
	for _, in := range s.Interims {
		if len(in.Header) != 0 {
			t.Fatalf("a 102 with header fields %v", in.Header)
		}
	}
	harness.SameTree(t, harness.TreeDigest(t, filepath.Join(root, "src")), harness.TreeDigest(t, filepath.Join(root, "dst")))
}
