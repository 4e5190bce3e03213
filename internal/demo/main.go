// Command demo is for trying the module by hand, not for production: it is
// a Caddy with the standard modules and processing built in, plus a slow
// upstream on 127.0.0.1:9080 (DEMO_UPSTREAM overrides the address) that
// answers /slow?seconds=N after N seconds, so that Caddyfile.example has
// something long to put processing in front of.
//
//	go run ./internal/demo run --config Caddyfile.example
//	curl -v 'http://localhost:8080/slow?seconds=10'
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/c055b0d7/caddy-processing"
)

func main() {
	addr := os.Getenv("DEMO_UPSTREAM")
	if addr == "" {
		addr = "127.0.0.1:9080"
	}
	go func() {
		log.Printf("demo: slow upstream on http://%s/slow?seconds=N", addr)
		log.Print(http.ListenAndServe(addr, http.HandlerFunc(slow)))
	}()
	caddycmd.Main()
}

// slow answers after the number of seconds in the query (default 10, at
// most 600), like a backend busy with a long job. Asked with
// `Prefer: processing` (draft-wright-http-progress), it sends a 102 with
// `Progress: <seconds done>/<seconds>` at the start and after each second,
// as a backend that reports its progress would.
func slow(w http.ResponseWriter, r *http.Request) {
	seconds, err := strconv.Atoi(r.URL.Query().Get("seconds"))
	if err != nil || seconds < 0 {
		seconds = 10
	}
	seconds = min(seconds, 600)
	progress := strings.Contains(strings.ToLower(strings.Join(r.Header["Prefer"], ",")), "processing")
	for done := 0; done < seconds; done++ {
		if progress {
			w.Header().Set("Progress", fmt.Sprintf("%d/%d", done, seconds))
			w.WriteHeader(http.StatusProcessing)
			w.Header().Del("Progress")
		}
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return
		}
	}
	fmt.Fprintf(w, "done after %d seconds\n", seconds)
}
