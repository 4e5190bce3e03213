package main

// The client side of the scale test. It runs in a child process, so that
// the server's CPU time and memory are the server's alone. Each request is
// timestamped when it is written; each 102 is timestamped when its last
// byte is read and compared with the schedule the module promises:
// delay + k*interval after the request (k = 0 for the first 102).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

type clientConfig struct {
	Proto          string        `json:"proto"` // h1 or h2 (h2c with prior knowledge)
	Addr           string        `json:"addr"`
	N              int           `json:"n"`
	StreamsPerConn int           `json:"streams_per_conn"` // h2 only
	Ramp           time.Duration `json:"ramp"`
	Delay          time.Duration `json:"delay"`
	Interval       time.Duration `json:"interval"`
	Timeout        time.Duration `json:"timeout"`
	// CountMissing makes a 102 that never came count as late (see
	// schedule); the stall test sets it.
	CountMissing bool `json:"count_missing,omitempty"`
	// Stallers are clients that stop reading (stall.go), started after
	// the ramp; StallStreams is the long streams each HTTP/2 staller opens
	// behind its blocked download.
	Stallers     int `json:"stallers,omitempty"`
	StallStreams int `json:"stall_streams,omitempty"`
}

// clientResult is what the child reports to the parent as one JSON line.
type clientResult struct {
	Sent      int      `json:"sent"`
	Completed int      `json:"completed"` // 200 "done" received
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors,omitempty"` // the first few
	Interims  int      `json:"interims"`
	// Lateness of each 102 against its schedule, in milliseconds.
	LateP50 float64 `json:"late_p50_ms"`
	LateP99 float64 `json:"late_p99_ms"`
	LateMax float64 `json:"late_max_ms"`
	// Interims that came earlier than their schedule (negative lateness)
	// by more than 5 ms: 102s the schedule does not account for.
	Early int `json:"early"`
	// Missing counts the 102s the schedule promised before a request
	// ended, less half an interval, that never came (CountMissing only).
	Missing int `json:"missing,omitempty"`
	// ShortGaps counts two consecutive 102s of one request closer than
	// the interval less the module's coalescing grid, less 5 ms of the
	// client's own jitter.
	ShortGaps int `json:"short_gaps"`
	// GapMin is the shortest time between two 102s of one request.
	GapMin float64 `json:"gap_min_ms"`
	// RampDone is when the last request was written, after start.
	RampDone time.Duration `json:"ramp_done"`
	Wall     time.Duration `json:"wall"`
	// StallerErrors are the first few errors of the stallers' setup.
	StallerErrors []string `json:"staller_errors,omitempty"`
	StallersUp    int      `json:"stallers_up,omitempty"`
}

// tally gathers every request's outcome.
type tally struct {
	mu        sync.Mutex
	lateness  []time.Duration
	gaps      []time.Duration
	completed int
	failed    int
	missing   int
	errors    []string
	sent      int
}

func (t *tally) add(late, gaps []time.Duration, missing int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.missing += missing
	t.lateness = append(t.lateness, late...)
	t.gaps = append(t.gaps, gaps...)
	if err != nil {
		t.failed++
		if len(t.errors) < 5 {
			t.errors = append(t.errors, err.Error())
		}
		return
	}
	t.completed++
}

func (t *tally) markSent() {
	t.mu.Lock()
	t.sent++
	t.mu.Unlock()
}

// schedule turns the arrival times of one request's 102s into lateness
// and the gaps between them. With CountMissing, each 102 due more than
// half an interval before the request ended (end) that never came counts
// as late by end less its due time, a lower bound: a 102 held back until
// the request ends would otherwise not show in the lateness at all, only
// as a shorter list of arrivals.
func (c clientConfig) schedule(sent time.Time, arrivals []time.Time, end time.Time) (late, gaps []time.Duration, missing int) {
	due := func(k int) time.Time { return sent.Add(c.Delay + time.Duration(k)*c.Interval) }
	late = make([]time.Duration, len(arrivals))
	for k, at := range arrivals {
		late[k] = at.Sub(due(k))
		if k > 0 {
			gaps = append(gaps, at.Sub(arrivals[k-1]))
		}
	}
	if c.CountMissing {
		for k := len(arrivals); !due(k).After(end.Add(-c.Interval / 2)); k++ {
			late = append(late, end.Sub(due(k)))
			missing++
		}
	}
	return late, gaps, missing
}

// grid is the module's coalescing grid for the protocol and interval
// (interimWriter.grid).
func (c clientConfig) grid() time.Duration {
	if c.Proto == "h1" {
		return time.Millisecond
	}
	return min(max(c.Interval/8, time.Millisecond), 25*time.Millisecond)
}

// runClient runs the whole load and writes the result as JSON to stdout.
// A line "ramped" goes to stdout first, once every request is written,
// so that the parent can sample its memory with all of them in flight.
func runClient(c clientConfig) error {
	t := &tally{}
	start := time.Now()
	var rampDone time.Duration
	var wg sync.WaitGroup
	switch c.Proto {
	case "h1":
		for i := range c.N {
			wg.Go(func() { c.h1Request(t, start.Add(c.slot(i))) })
		}
	case "h2":
		conns := (c.N + c.StreamsPerConn - 1) / c.StreamsPerConn
		for ci := range conns {
			// Request i goes on connection i % conns, so that every
			// connection's streams are spread over the whole ramp.
			var slots []time.Time
			for i := ci; i < c.N; i += conns {
				slots = append(slots, start.Add(c.slot(i)))
			}
			wg.Go(func() { c.h2Conn(t, slots) })
		}
	default:
		return fmt.Errorf("unknown protocol %q", c.Proto)
	}
	release := make(chan struct{})
	var stallWG sync.WaitGroup
	stalls := &stallTally{}
	for i := range c.Stallers {
		// After the ramp, when every measured request waits, spread over
		// one interval so that their 102s fall due in different ticks.
		at := start.Add(c.Ramp + time.Duration(i)*c.Interval/time.Duration(c.Stallers))
		stallWG.Go(func() { c.stall(at, release, stalls) })
	}
	// Report the end of the ramp when every request is written.
	go func() {
		for {
			t.mu.Lock()
			sent := t.sent + t.failed
			t.mu.Unlock()
			if sent >= c.N {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Println("ramped")
	}()
	wg.Wait()
	rampDone = c.Ramp // the nominal ramp; the parent times its own sample

	stalls.mu.Lock()
	r := clientResult{Sent: t.sent, Completed: t.completed, Failed: t.failed, Errors: t.errors, RampDone: rampDone, Wall: time.Since(start),
		Missing: t.missing, StallersUp: stalls.up, StallerErrors: stalls.errors}
	stalls.mu.Unlock()
	r.Interims = len(t.lateness) - t.missing // the 102s received
	slices.Sort(t.lateness)
	if n := len(t.lateness); n > 0 {
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		r.LateP50 = ms(t.lateness[n/2])
		r.LateP99 = ms(t.lateness[min(n-1, n*99/100)])
		r.LateMax = ms(t.lateness[n-1])
		for _, l := range t.lateness {
			if l < -5*time.Millisecond {
				r.Early++
			}
		}
	}
	if len(t.gaps) > 0 {
		r.GapMin = float64(slices.Min(t.gaps)) / float64(time.Millisecond)
		for _, g := range t.gaps {
			if g < c.Interval-c.grid()-5*time.Millisecond {
				r.ShortGaps++
			}
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		return err
	}
	// The stallers hold on until the parent, having looked at the
	// server's goroutines, closes stdin; then they close their
	// connections, which ends the server's blocked writes.
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(release)
	stallWG.Wait()
	return nil
}

// slot is when request i is written: the ramp spreads the requests evenly,
// as real traffic would spread them, instead of firing every timer of
// every request in the same instant.
func (c clientConfig) slot(i int) time.Duration {
	return time.Duration(int64(c.Ramp) * int64(i) / int64(c.N))
}

// h1Request makes one HTTP/1.1 request on its own connection.
func (c clientConfig) h1Request(t *tally, at time.Time) {
	time.Sleep(time.Until(at))
	conn, err := net.DialTimeout("tcp", c.Addr, 30*time.Second)
	if err != nil {
		t.add(nil, nil, 0, err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(c.Timeout))
	req := "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: loadtest\r\n\r\n"
	// The time is taken before the write, as for HTTP/2: the server
	// cannot have the request sooner, so a 102 that comes before this
	// time plus delay was early. Taken after the write, it would include
	// any time this goroutine waited to run again, and a client short of
	// CPU would count 102s as early that were not.
	sent := time.Now()
	if _, err := io.WriteString(conn, req); err != nil {
		t.add(nil, nil, 0, err)
		return
	}
	t.markSent()
	var arrivals []time.Time
	end := func(err error) {
		late, gaps, missing := c.schedule(sent, arrivals, time.Now())
		t.add(late, gaps, missing, err)
	}
	br := bufio.NewReaderSize(conn, 512)
	for {
		code, err := readHead(br)
		if err != nil {
			end(fmt.Errorf("after %d interims: %w", len(arrivals), err))
			return
		}
		if code == 102 {
			arrivals = append(arrivals, time.Now())
			continue
		}
		if code != 200 {
			end(fmt.Errorf("status %d", code))
			return
		}
		body := make([]byte, 4)
		if _, err := io.ReadFull(br, body); err != nil || string(body) != "done" {
			end(fmt.Errorf("body %q: %v", body, err))
			return
		}
		end(nil)
		return
	}
}

// readHead reads one status line and header block and returns the code.
// The server's final response always has Content-Length 4.
func readHead(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			return code, nil
		}
	}
}

// h2Stream is one request on an HTTP/2 connection.
type h2Stream struct {
	sent     time.Time
	arrivals []time.Time
	status   int
}

// h2Conn makes one request per slot on one h2c connection (prior
// knowledge), all open at once.
func (c clientConfig) h2Conn(t *tally, slots []time.Time) {
	time.Sleep(time.Until(slots[0]))
	fail := func(n int, err error) {
		for range n {
			t.add(nil, nil, 0, err)
		}
	}
	conn, err := net.DialTimeout("tcp", c.Addr, 30*time.Second)
	if err != nil {
		fail(len(slots), err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(c.Timeout + c.Ramp))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		fail(len(slots), err)
		return
	}
	bw := bufio.NewWriter(conn)
	fr := http2.NewFramer(bw, bufio.NewReader(conn))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var wmu sync.Mutex // the framer's writes: the sender and the reader's acks
	write := func(f func() error) error {
		wmu.Lock()
		defer wmu.Unlock()
		if err := f(); err != nil {
			return err
		}
		return bw.Flush()
	}
	if err := write(func() error { return fr.WriteSettings() }); err != nil {
		fail(len(slots), err)
		return
	}

	var mu sync.Mutex // streams, shared by the sender and the reader
	streams := make(map[uint32]*h2Stream, len(slots))
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	senderDone := make(chan struct{})
	defer func() {
		// Closing the connection makes a sender still waiting to write
		// fail the requests it has not sent.
		conn.Close()
		<-senderDone
	}()
	go func() {
		defer close(senderDone)
		for i, at := range slots {
			time.Sleep(time.Until(at))
			id := uint32(2*i + 1)
			err := write(func() error {
				hbuf.Reset()
				for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "127.0.0.1"}, {"user-agent", "loadtest"}} {
					_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
				}
				mu.Lock()
				streams[id] = &h2Stream{sent: time.Now()}
				mu.Unlock()
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
			})
			if err != nil {
				fail(len(slots)-i, err)
				conn.Close()
				return
			}
			t.markSent()
		}
	}()

	finish := func(id uint32, err error) {
		mu.Lock()
		s := streams[id]
		delete(streams, id)
		mu.Unlock()
		if s != nil {
			late, gaps, missing := c.schedule(s.sent, s.arrivals, time.Now())
			t.add(late, gaps, missing, err)
		}
	}
	done := 0
	for done < len(slots) {
		f, err := fr.ReadFrame()
		if err != nil {
			// Every stream still open fails with the connection.
			mu.Lock()
			ids := make([]uint32, 0, len(streams))
			for id := range streams {
				ids = append(ids, id)
			}
			mu.Unlock()
			for _, id := range ids {
				finish(id, fmt.Errorf("connection: %w", err))
			}
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = write(func() error { return fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = write(func() error { return fr.WritePing(true, f.Data) })
			}
		case *http2.MetaHeadersFrame:
			code, _ := strconv.Atoi(f.PseudoValue("status"))
			mu.Lock()
			if s := streams[f.StreamID]; s != nil {
				if code == 102 {
					s.arrivals = append(s.arrivals, time.Now())
				} else {
					s.status = code
				}
			}
			mu.Unlock()
			if f.StreamEnded() {
				finish(f.StreamID, errors.New("response without body"))
				done++
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				mu.Lock()
				s := streams[f.StreamID]
				mu.Unlock()
				var err error
				if s != nil && s.status != 200 {
					err = fmt.Errorf("status %d", s.status)
				}
				finish(f.StreamID, err)
				done++
			}
		case *http2.RSTStreamFrame:
			finish(f.StreamID, fmt.Errorf("stream reset: %v", f.ErrCode))
			done++
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				err := fmt.Errorf("goaway: %v %s", f.ErrCode, strings.TrimSpace(string(f.DebugData())))
				mu.Lock()
				n := len(streams)
				mu.Unlock()
				fail(n, err)
				return
			}
		}
	}
}
