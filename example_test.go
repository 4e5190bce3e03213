package processing_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/c055b0d7/caddy-processing"
)

// A Caddyfile puts processing in front of a backend that takes a second.
// The client gets a 102 every 100ms, at most three of them, each with a
// count in X-Progress, and then the backend's answer.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		io.WriteString(w, "report ready")
	}))
	defer backend.Close()

	site := freeAddr()
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://%s {
	processing 100ms {
		max    3
		header X-Progress "{http.processing.count}"
	}
	reverse_proxy %s
}
`, site, backend.Listener.Addr())

	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		log.Fatal(err)
	}
	defer caddy.Stop()

	// Go's client skips interim responses; a trace shows them.
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
			fmt.Println(code, http.StatusText(code), "X-Progress:", header.Get("X-Progress"))
			return nil
		},
	}
	req, err := http.NewRequest("GET", "http://"+site+"/report", nil)
	if err != nil {
		log.Fatal(err)
	}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, string(body))
	// Output:
	// 102 Processing X-Progress: 1
	// 102 Processing X-Progress: 2
	// 102 Processing X-Progress: 3
	// 200 OK report ready
}

// freeAddr returns a loopback address that nothing listened on a moment ago.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
