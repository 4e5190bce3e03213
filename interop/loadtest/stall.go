package main

// Stall isolation: how much one client that stops reading changes the
// other requests' 102 lateness p99. Each protocol gets one Caddy
// with the module, and phases alternate on it: A with no staller, B with
// -stallers clients that stop reading, started after the ramp while every
// measured request waits. The measured requests are the scale test's
// (client.go), with a 102 that never came counted as late.
//
// A staller must make the server's 102 write BLOCK, not merely go unread:
//
//	h1: net/http writes every 1xx to the socket and flushes it at once
//	    (response.WriteHeader, "1xx class"), and Caddy sets no write
//	    deadline by default. The staller's 102s carry 32,000 bytes of
//	    fields every millisecond (route /stall-h1): Linux grows a socket's
//	    send buffer up to net.ipv4.tcp_wmem's maximum (4 MiB here), and
//	    8,000 bytes every 10 ms had not filled it 3 s in, so the size and
//	    rate are what make the next 102 write wait in poll.(*FD).Write
//	    within a fraction of a second.
//	h2: one connection downloads an endless body (/stall-body) that the
//	    staller never reads, so x/net/http2's one in-flight frame write
//	    (serverConn.writeFrameAsync) waits on the full socket; the
//	    connection's other streams ask for 102s, and x/net's
//	    serverConn.writeHeaders waits for each 1xx frame to be written
//	    (it hands the handler's header map over, so it must). Each such
//	    102 holds one of the wheel's fire goroutines until the staller
//	    goes.
//
// The parent checks this from the server's goroutine stacks once the
// measured requests are done and the stallers still hold on (a blocked
// write stays blocked until its client reads or goes), and, after the
// client closed the stallers, that no goroutine of a request is left. Not
// midway: the stack dump stops the world for as long as it formats every
// goroutine's stack, a few hundred milliseconds at 4,000 goroutines on
// this machine, which showed as that much lateness at p99 in both phases.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ---- the stallers, in the client process ---------------------------------

// stallTally gathers the stallers' setup outcomes.
type stallTally struct {
	mu     sync.Mutex
	up     int
	errors []string
}

func (s *stallTally) done(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.up++
	} else if len(s.errors) < 5 {
		s.errors = append(s.errors, err.Error())
	}
}

// stallRcvBuf is the stallers' socket receive buffer, the smallest Linux
// takes (it doubles the value and raises it to its minimum).
const stallRcvBuf = 4096

// stallDialer sets the receive buffer before connect: on Linux the window
// scale is fixed at the SYN from the buffer size then (tcp(7): "the socket
// buffer size must be set prior to the listen(2) or connect(2) calls"), so
// net.TCPConn.SetReadBuffer after Dial would leave the window large.
var stallDialer = net.Dialer{Timeout: 30 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stallRcvBuf)
	})
	if err != nil {
		return err
	}
	return serr
}}

// stall runs one staller from at until release, and never reads.
func (c clientConfig) stall(at time.Time, release <-chan struct{}, t *stallTally) {
	time.Sleep(time.Until(at))
	conn, err := stallDialer.Dial("tcp", c.Addr)
	if err != nil {
		t.done(err)
		return
	}
	defer conn.Close()
	switch c.Proto {
	case "h1":
		_, err = io.WriteString(conn, "GET /stall-h1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: loadtest-staller\r\n\r\n")
	case "h2":
		err = c.h2Stall(conn)
	default:
		err = fmt.Errorf("unknown protocol %q", c.Proto)
	}
	t.done(err)
	if err == nil {
		<-release
	}
}

// h2Stall opens, on one h2c connection, a download of an endless body and
// then StallStreams long requests, and leaves them all unread. The windows
// are opened wide: at HTTP/2's default 65,535 bytes x/net would stop
// sending DATA on flow control, which blocks no write, and the 102s, which
// flow control does not cover, would still go out.
func (c clientConfig) h2Stall(conn net.Conn) error {
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		return err
	}
	bw := bufio.NewWriter(conn)
	fr := http2.NewFramer(bw, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: math.MaxInt32}); err != nil {
		return err
	}
	if err := fr.WriteWindowUpdate(0, math.MaxInt32-65535); err != nil {
		return err
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	request := func(id uint32, path string) error {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", path}, {":authority", "127.0.0.1"}, {"user-agent", "loadtest-staller"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	}
	if err := request(1, "/stall-body"); err != nil {
		return err
	}
	for i := range c.StallStreams {
		if err := request(uint32(2*i+3), "/"); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ---- the phases, in the server process -----------------------------------

// stallCheck is what the server's goroutine stacks show at one moment.
type stallCheck struct {
	Goroutines int `json:"goroutines"`
	// BlockedFires are goroutines sending a 102 (interimWriter.due) that
	// are parked in a socket write (h1) or waiting for x/net to write
	// their frame (h2).
	BlockedFires int `json:"blocked_fires"`
	// BlockedConnWrites are HTTP/2 connections whose frame writer is
	// parked in a socket write.
	BlockedConnWrites int `json:"blocked_conn_writes"`
	// Serving are goroutines still serving a request: a handler of the
	// load program's, or a 102 fire. Once the client exited, any is a
	// leak.
	Serving int `json:"serving"`
}

func checkStacks() stallCheck {
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	var s stallCheck
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		s.Goroutines++
		head, _, _ := strings.Cut(g, "\n")
		parked := strings.Contains(head, "[IO wait") || strings.Contains(head, "[select")
		write := strings.Contains(g, "poll.(*FD).Write")
		if parked && strings.Contains(g, "(*interimWriter).due") &&
			(write || strings.Contains(g, "(*serverConn).writeHeaders")) {
			s.BlockedFires++
		}
		if parked && write && strings.Contains(g, "writeFrameAsync") {
			s.BlockedConnWrites++
		}
		for _, f := range []string{"main.hold.ServeHTTP", "main.(*hold).ServeHTTP", "main.endless.ServeHTTP", "main.(*endless).ServeHTTP", "(*interimWriter).due"} {
			if strings.Contains(g, f) {
				s.Serving++
				break
			}
		}
	}
	return s
}

type stallPhase struct {
	Stallers int          `json:"stallers"`
	Client   clientResult `json:"client"`
	// Held: the measured requests done, the stallers still holding on.
	// After: once the client exited, when no goroutine serves a request
	// any more (or after 15 s).
	Held             stallCheck    `json:"held"`
	GoroutinesBefore int           `json:"goroutines_before"`
	After            stallCheck    `json:"after"`
	SettledIn        time.Duration `json:"settled_in"`
	LoadAvg          string        `json:"loadavg"`
}

type stallPair struct {
	WithoutP99 float64 `json:"without_p99_ms"`
	WithP99    float64 `json:"with_p99_ms"`
	Diff       float64 `json:"diff_ms"`
	Met        bool    `json:"met"`
}

type stallReport struct {
	Config       scaleConfig  `json:"config"`
	Stallers     int          `json:"stallers"`
	StallStreams int          `json:"stall_streams"`
	Phases       []stallPhase `json:"phases"`
	Pairs        []stallPair  `json:"pairs"`
	// Met: in every pair the p99 with stallers is at most 10 ms above
	// the one without.
	Met bool `json:"met"`
}

// stallSites is the Caddyfile: the measured requests and the HTTP/2
// stallers' long streams on /, the HTTP/1.1 stallers' padded 102s on
// /stall-h1, and the HTTP/2 stallers' download on /stall-body.
func stallSites(port int, c scaleConfig) string {
	directive := c.WithLines
	if directive == "" {
		directive = fmt.Sprintf("processing {\n\t\t\tdelay %s\n\t\t\tinterval %s\n\t\t}", c.Delay, c.Interval)
	}
	return fmt.Sprintf(`http://127.0.0.1:%d {
	handle /stall-body {
		loadtest_endless
	}
	handle /stall-h1 {
		processing {
			delay 1ms
			interval 1ms
			header X-Pad %[2]s
			header X-Pad %[2]s
			header X-Pad %[2]s
			header X-Pad %[2]s
		}
		loadtest_hold %[3]s
	}
	handle {
		%[4]s
		loadtest_hold %[3]s
	}
}
`, port, strings.Repeat("x", 8000), c.Hold, directive)
}

func runStall(c scaleConfig, stallers, streams, pairs int) (*stallReport, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := loadCaddy(stallSites(port, c)); err != nil {
		return nil, err
	}
	rep := &stallReport{Config: c, Stallers: stallers, StallStreams: streams, Met: true}
	for range pairs {
		var pair [2]*stallPhase
		for i, n := range []int{0, stallers} {
			ph, err := stallOnce(c, port, n, streams)
			if err != nil {
				return nil, err
			}
			rep.Phases = append(rep.Phases, *ph)
			pair[i] = ph
		}
		p := stallPair{WithoutP99: pair[0].Client.LateP99, WithP99: pair[1].Client.LateP99}
		p.Diff = p.WithP99 - p.WithoutP99
		p.Met = p.Diff <= 10
		rep.Met = rep.Met && p.Met
		rep.Pairs = append(rep.Pairs, p)
		logf.Printf("stall %s: lateness p99 %.1f ms without stallers, %.1f ms with %d: %+.1f ms (target ≤ +10 ms: %v)",
			c.Proto, p.WithoutP99, p.WithP99, stallers, p.Diff, p.Met)
	}
	return rep, nil
}

func stallOnce(c scaleConfig, port, stallers, streams int) (*stallPhase, error) {
	logf.Printf("stall %s, %d stallers: %d requests over %v, held %v", c.Proto, stallers, c.N, c.Ramp, c.Hold)
	ph := &stallPhase{Stallers: stallers, GoroutinesBefore: checkStacks().Goroutines}
	cfg, _ := json.Marshal(clientConfig{
		Proto: c.Proto, Addr: fmt.Sprintf("127.0.0.1:%d", port), N: c.N, StreamsPerConn: c.StreamsPerConn,
		Ramp: c.Ramp, Delay: c.Delay, Interval: c.Interval, Timeout: c.Hold + time.Minute,
		CountMissing: true, Stallers: stallers, StallStreams: streams,
	})
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-client")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	defer stdin.Close()
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if _, err := stdin.Write(cfg); err != nil {
		_ = cmd.Wait()
		return nil, err
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ramped" {
		_ = cmd.Wait()
		return nil, fmt.Errorf("client: expected \"ramped\", got %q", lines.Text())
	}
	ph.LoadAvg = loadavg()
	if !lines.Scan() {
		_ = cmd.Wait()
		return nil, fmt.Errorf("client: no result: %v", lines.Err())
	}
	if err := json.Unmarshal(lines.Bytes(), &ph.Client); err != nil {
		_ = cmd.Wait()
		return nil, fmt.Errorf("client result %q: %v", lines.Text(), err)
	}
	ph.Held = checkStacks()
	stdin.Close() // lets the stallers go
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("client: %v", err)
	}
	// The client closed the stallers' connections as it exited: their
	// blocked writes fail, and every goroutine of theirs should end.
	t1 := time.Now()
	for {
		ph.After = checkStacks()
		if ph.After.Serving == 0 || time.Since(t1) > 15*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	ph.SettledIn = time.Since(t1)
	cl := ph.Client
	logf.Printf("stall %s, %d stallers (%d up, errors %q): %d/%d completed, %d failed %q, %d 102s, %d missing, lateness p50 %.1f ms p99 %.1f ms max %.1f ms, %d early",
		c.Proto, stallers, cl.StallersUp, cl.StallerErrors, cl.Completed, c.N, cl.Failed, cl.Errors, cl.Interims, cl.Missing, cl.LateP50, cl.LateP99, cl.LateMax, cl.Early)
	logf.Printf("stall %s, %d stallers: stallers holding on, measured requests done: %d goroutines, %d 102 fires blocked, %d HTTP/2 connection writes blocked; after: %d goroutines (%d before), %d serving a request, %v after the client exited",
		c.Proto, stallers, ph.Held.Goroutines, ph.Held.BlockedFires, ph.Held.BlockedConnWrites,
		ph.After.Goroutines, ph.GoroutinesBefore, ph.After.Serving, ph.SettledIn.Round(time.Millisecond))
	return ph, nil
}
