package main

// The library floor for a 102: the scale test's load against Go's own
// server, with neither Caddy nor the module. Each handler writes its 102s
// itself, from its own goroutine, on the schedule the module keeps
// (delay, then every interval), which is the cheapest a 102 can be sent
// through net/http (HTTP/1.1) and golang.org/x/net/http2 (h2c), the
// server Caddy uses for h2c. What the module adds to a 102 is the scale
// test's CPU per 102 less this one.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// startPlain serves the scale test's route on a plain Go server: hold for
// c.Hold and answer "done", with 102s on the module's schedule when
// interims is set.
func startPlain(c scaleConfig, port int, interims bool) (stop func(), err error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		end := start.Add(c.Hold)
		t := time.NewTimer(c.Hold)
		defer t.Stop()
		next := c.Delay
		for {
			if interims && start.Add(next).Before(end) {
				t.Reset(time.Until(start.Add(next)))
			} else {
				t.Reset(time.Until(end))
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
			if !time.Now().Before(end) {
				break
			}
			w.WriteHeader(http.StatusProcessing)
			next += c.Interval
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "4")
		_, _ = w.Write([]byte("done"))
	})
	srv := &http.Server{Handler: handler}
	// h2c the way Caddy serves it: net/http's unencrypted HTTP/2 handed
	// to x/net's server by http2.ConfigureServer.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Protocols = &protocols
	//lint:ignore SA1019 deprecated in favour of net/http's own HTTP/2, but Caddy v2.11.9 still serves h2c through it (modules/caddyhttp/app.go), and this floor is Caddy's.
	if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
		l.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logf.Print(err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
