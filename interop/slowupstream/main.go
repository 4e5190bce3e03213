// Command slowupstream is the backend of interop/xcaddy.sh: a server on a free
// loopback port that answers every request after -wait, long enough for
// the Caddy in front of it to send several 102s. It writes its address to
// -addr-file once it listens, so the script never guesses a port.
//
//	go build -o slowupstream ./slowupstream   (in interop/)
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	wait := flag.Duration("wait", 2*time.Second, "how long each request takes")
	addrFile := flag.String("addr-file", "", "file to write the listening address to")
	flag.Parse()

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	// Written aside and renamed, so the script never reads half an address.
	if err := os.WriteFile(*addrFile+".tmp", []byte(l.Addr().String()), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(*addrFile+".tmp", *addrFile); err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(*wait):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "slow upstream done after %v\n", *wait)
	})))
}
