package harness

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestEnvCountRefusesWhatIsNotACount(t *testing.T) {
	const name = "PROCESSING_TEST_COUNT"
	for _, tc := range []struct {
		value string
		want  int
		fatal string
	}{
		{"", 7, ""},
		{"12", 12, ""},
		{"1O0", 0, `PROCESSING_TEST_COUNT="1O0": want a positive whole number`},
		{"0", 0, `PROCESSING_TEST_COUNT="0": want a positive whole number`},
		{"-3", 0, `PROCESSING_TEST_COUNT="-3": want a positive whole number`},
		{" 5", 0, `PROCESSING_TEST_COUNT=" 5": want a positive whole number`},
	} {
		t.Setenv(name, tc.value)
		rec := &fatalRecorder{TB: t}
		got := EnvCount(rec, name, 7)
		if rec.fatal != tc.fatal || (tc.fatal == "" && got != tc.want) {
			t.Errorf("%s=%q: got %d and failure %q, want %d and %q", name, tc.value, got, rec.fatal, tc.want, tc.fatal)
		}
	}
}

// leakedReader and leakedWriter stand for a goroutine that outlived its
// request: one waits for bytes that never come, one writes to a peer that
// does not read.
func leakedReader(c net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	_, _ = c.Read(make([]byte, 1))
}

func leakedWriter(c net.Conn, done chan<- struct{}) {
	defer func() { done <- struct{}{} }()
	// More than loopback's socket buffers on both sides hold.
	_, _ = c.Write(make([]byte, 64<<20))
}

// TestLeakCheckCatchesGoroutinesBlockedOnConnections runs the leak check
// of every test against goroutines parked in the network poller, which it
// must report, and again once they are gone, when it must pass.
func TestLeakCheckCatchesGoroutinesBlockedOnConnections(t *testing.T) {
	opts := append(LeakOptions(), goleak.IgnoreCurrent())
	pair := func() (net.Conn, net.Conn) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	readSide, idle := pair()
	writeSide, deaf := pair()
	done := make(chan struct{}, 2)
	go leakedReader(readSide, done)
	go leakedWriter(writeSide, done)

	err := goleak.Find(opts...)
	if err == nil {
		t.Error("the leak check passed with two goroutines blocked on connections")
	} else {
		for _, want := range []string{"harness.leakedReader", "harness.leakedWriter", "internal/poll.runtime_pollWait"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("the leak report does not name %s:\n%v", want, err)
			}
		}
	}

	for _, c := range []net.Conn{readSide, idle, writeSide, deaf} {
		c.Close()
	}
	<-done
	<-done
	if err := goleak.Find(opts...); err != nil {
		t.Errorf("the leak check fails once the goroutines are gone: %v", err)
	}
}

// TestMain checks that nothing the tests started is still running at the
// end: no tick, no request goroutine, no server.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, LeakOptions()...)
}

// fatalRecorder is a testing.TB whose Fatalf records the message instead
// of ending the test, for checking a helper's refusals.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
}
