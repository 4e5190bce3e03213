package main

import (
	"fmt"
	"net"
	"time"
)

// floorReport is the kernel's floor for a 102 on HTTP/1.1: the sender CPU of one 27-byte write to an idle loopback connection,
// written round-robin to as many connections as the scale test holds, at
// the scale test's rate (one write per connection per interval).
type floorReport struct {
	Conns       int           `json:"conns"`
	Writes      int           `json:"writes"`
	CPU         time.Duration `json:"cpu"`
	CPUPerWrite time.Duration `json:"cpu_per_write"`
}

// interimBytes is what net/http writes for a bare 102.
const interimBytes = "HTTP/1.1 102 Processing\r\n\r\n"

func runFloor(n int, interval, length time.Duration) (*floorReport, error) {
	if len(interimBytes) != 27 {
		return nil, fmt.Errorf("the floor's write is %d bytes, not 27", len(interimBytes))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	// The accepted ends are held and never read: at 27 bytes a write, a
	// run fills no socket buffer.
	accepted := make(chan net.Conn, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	senders := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range senders {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		senders = append(senders, c)
	}
	var peers []net.Conn
	for range n {
		peers = append(peers, <-accepted)
	}
	defer func() {
		for _, c := range peers {
			c.Close()
		}
	}()
	time.Sleep(time.Second) // let the connections go idle
	// Writes go out in batches once a millisecond, as the wheel's ticks
	// send 102s, so that the floor pays one wake-up per tick, not one per
	// write.
	msg := []byte(interimBytes)
	perTick := float64(n) * float64(time.Millisecond) / float64(interval)
	rep := &floorReport{Conns: n}
	cpu0, start := cpuTime(), time.Now()
	owed, i := 0.0, 0
	for tick := start; time.Since(start) < length; {
		tick = tick.Add(time.Millisecond)
		time.Sleep(time.Until(tick))
		for owed += perTick; owed >= 1; owed-- {
			if _, err := senders[i%n].Write(msg); err != nil {
				return nil, err
			}
			i++
			rep.Writes++
		}
	}
	rep.CPU = cpuTime() - cpu0
	rep.CPUPerWrite = rep.CPU / time.Duration(rep.Writes)
	logf.Printf("floor: %d writes of 27 bytes round-robin to %d idle loopback connections: %v CPU, %v per write",
		rep.Writes, n, rep.CPU.Round(time.Millisecond), rep.CPUPerWrite)
	return rep, nil
}
