package processing_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
	"golang.org/x/crypto/bcrypt"
)

// TestDefaultOrderWithAuthHeaderAndEncode runs a site written in the
// default directive order (no order line, no route): basic_auth, header
// (an immediate and a deferred operation), encode and processing. A request
// basic_auth refuses gets its 401 and no 102. An authenticated one gets
// 102s that carry only processing's own field: never the header
// directive's fields, whose deferred operation runs once, on the final
// response; and encode, inside processing, sends no second 102 before the
// implicit 200 it compresses.
func TestDefaultOrderWithAuthHeaderAndEncode(t *testing.T) {
	body := strings.Repeat("compressible ", 200) // over encode's 512-byte minimum
	harness.SetBehaviour(t, "order_slow", harness.WriteAfter(400*time.Millisecond, body))
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := harness.StartCaddy(t, fmt.Sprintf(`
http://127.0.0.1:{PORT} {
	test_work order_slow
	encode gzip
	header {
		X-Site yes
		+X-Deferred d
		defer
	}
	basic_auth {
		alice %s
	}
	processing 100ms {
		header X-Configured c
	}
}
`, hash))
	addr := harness.Loopback(port)

	// Prefer: processing asks for a 102 at once (draft-wright-http-progress):
	// a processing that ran before basic_auth would send it.
	refused := harness.RawRequest(t, addr, harness.RawGet("/", "Prefer: processing"))
	if refused.Status != 401 || len(refused.Interims) != 0 {
		t.Errorf("without credentials: %d after %d interim responses, want 401 and none", refused.Status, len(refused.Interims))
	}

	res := harness.RawRequest(t, addr, harness.RawGet("/", "Authorization: Basic YWxpY2U6c2VjcmV0", "Accept-Encoding: gzip"))
	if res.Status != 200 || len(res.Interims) < 2 {
		t.Fatalf("authenticated: %d after %d interim responses\n%s", res.Status, len(res.Interims), res.Wire)
	}
	for _, in := range res.Interims {
		if in.Raw != "HTTP/1.1 102 Processing\r\nX-Configured: c\r\n\r\n" {
			t.Fatalf("interim %q, want a 102 with processing's field only", in.Raw)
		}
	}
	h := res.Header
	if h.Get("X-Site") != "yes" || len(h.Values("X-Deferred")) != 1 || h.Get("Content-Encoding") != "gzip" || h.Get("X-Configured") != "" {
		t.Fatalf("final header %v", h)
	}
	zr, err := gzip.NewReader(bytes.NewReader(res.Body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || string(plain) != body {
		t.Fatalf("body: %v, %d bytes", err, len(plain))
	}
}
