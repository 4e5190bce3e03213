package processing

// Unit tests of the wheel on a fake clock: no sleeping, no real timer. The
// fake's afterFunc only records the wanted delay; the test moves time on
// and runs the tick itself, and dispatch records fires instead of starting
// goroutines.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"testing"
	"time"

	"github.com/c055b0d7/caddy-processing/internal/harness"
)

type fakeClock struct {
	mu    sync.Mutex
	t     time.Duration
	set   bool          // a wake-up is armed
	at    time.Duration // when the armed wake-up runs
	f     func()
	wakes int // how many wake-ups ran
}

func (c *fakeClock) now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) clockTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set, c.at, c.f = true, c.t+d, f
	return fakeTimer{c}
}

type fakeTimer struct{ c *fakeClock }

func (t fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.c.set
	t.c.set, t.c.at = true, t.c.t+d
	return was
}

func (t fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.c.set
	t.c.set = false
	return was
}

// advance moves the clock by d, running the armed wake-up each time its
// time has come, as the real timer would.
func (c *fakeClock) advance(d time.Duration) {
	end := c.now() + d
	for {
		c.mu.Lock()
		if !c.set || c.at > end {
			c.t = end
			c.mu.Unlock()
			return
		}
		c.t = c.at
		c.set = false
		c.wakes++
		f := c.f
		c.mu.Unlock()
		f()
	}
}

// armedIn is how long until the armed wake-up, and whether one is armed.
func (c *fakeClock) armedIn() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at - c.t, c.set
}

// testTarget records the fires of one entry.
type testTarget struct {
	fires []time.Duration
	gens  []uint32
}

// targets maps the entries of the test's wheel to their records.
var targets = map[*wheelEntry]*testTarget{}

func newTestWheel() (*wheel, *fakeClock) {
	c := &fakeClock{t: 1000 * time.Millisecond}
	w := newWheel(c)
	w.dispatch = func(due []*wheelEntry, gens []uint32) {
		for i, e := range due {
			if !w.startFire(e, gens[i]) {
				continue
			}
			tt := targets[e]
			tt.fires = append(tt.fires, c.now())
			tt.gens = append(tt.gens, gens[i])
			w.fired(e)
		}
	}
	return w, c
}

func newEntry(_ *fakeClock) (*wheelEntry, *testTarget) {
	e, tt := new(wheelEntry), new(testTarget)
	targets[e] = tt
	return e, tt
}

func TestWheelFiresAtItsTickNeverEarlier(t *testing.T) {
	w, c := newTestWheel()
	e, tt := newEntry(c)
	start := c.now()
	gen := w.schedule(e, start+2500*time.Microsecond)
	c.advance(2 * time.Millisecond)
	if len(tt.fires) != 0 {
		t.Fatalf("fired at %v, before its time %v", tt.fires[0]-start, 2500*time.Microsecond)
	}
	c.advance(time.Millisecond)
	if len(tt.fires) != 1 || tt.fires[0]-start != 3*time.Millisecond || tt.gens[0] != gen {
		t.Fatalf("fires %v (gens %v), want one at 3ms with gen %d", tt.fires, tt.gens, gen)
	}
}

func TestWheelStopsTickingWhenNothingWaits(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	w.schedule(e, c.now()+time.Millisecond)
	c.advance(5 * time.Millisecond)
	if _, set := c.armedIn(); set || w.wake != noTick {
		t.Fatalf("the wheel still ticks with nothing on it (timer set %v, wake %d)", set, w.wake)
	}
	// And starts again, from the current time, at the next schedule.
	e2, tt2 := newEntry(c)
	at := c.now() + 3*time.Millisecond
	w.schedule(e2, at)
	c.advance(10 * time.Millisecond)
	if len(tt2.fires) != 1 || tt2.fires[0] != at {
		t.Fatalf("after a restart: fires %v, want one at %v", tt2.fires, at)
	}
}

func TestWheelCancelledEntryNeverFires(t *testing.T) {
	w, c := newTestWheel()
	e, tt := newEntry(c)
	w.schedule(e, c.now()+2*time.Millisecond)
	if ch := w.cancel(e); ch != nil {
		t.Fatal("cancel of a listed entry reported a running fire")
	}
	c.advance(10 * time.Millisecond)
	if len(tt.fires) != 0 || w.n != 0 {
		t.Fatalf("cancelled entry fired %v; %d listed", tt.fires, w.n)
	}
}

func TestWheelRescheduleReplacesAndBumpsGeneration(t *testing.T) {
	w, c := newTestWheel()
	e, tt := newEntry(c)
	g1 := w.schedule(e, c.now()+2*time.Millisecond)
	g2 := w.schedule(e, c.now()+5*time.Millisecond)
	if g2 == g1 {
		t.Fatal("a reschedule kept the generation")
	}
	c.advance(10 * time.Millisecond)
	if len(tt.fires) != 1 || tt.gens[0] != g2 || w.n != 0 {
		t.Fatalf("fires %v gens %v (want one, gen %d); %d listed", tt.fires, tt.gens, g2, w.n)
	}
}

// The wheel sleeps until the tick of its one entry, 20 s away: its timer is
// set for that tick, not the next one, and after the fire, with nothing
// listed, it is not set again.
func TestWheelSleepsUntilItsOnlyEntryIsDue(t *testing.T) {
	w, c := newTestWheel()
	e, tt := newEntry(c)
	start := c.now()
	w.schedule(e, start+20*time.Second)
	if in, set := c.armedIn(); !set || in != 20*time.Second {
		t.Fatalf("timer set in %v (set %v), want in 20s", in, set)
	}
	c.advance(20 * time.Second)
	if len(tt.fires) != 1 || tt.fires[0]-start != 20*time.Second {
		t.Fatalf("fires %v, want one at 20s", tt.fires)
	}
	if c.wakes != 1 {
		t.Fatalf("the wheel woke %d times for one entry, want once", c.wakes)
	}
	if _, set := c.armedIn(); set || w.wake != noTick {
		t.Fatalf("timer set again with nothing listed (wake %d)", w.wake)
	}
}

// An entry due before the tick the timer is set for sets it earlier; one
// due later leaves it. Each entry then wakes the wheel once, at its tick.
func TestWheelEarlierEntrySetsTheTimerEarlier(t *testing.T) {
	w, c := newTestWheel()
	start := c.now()
	var targets []*testTarget
	for k, d := range []time.Duration{20 * time.Second, 5 * time.Second, 10 * time.Second} {
		e, tt := newEntry(c)
		w.schedule(e, start+d)
		targets = append(targets, tt)
		want := 5 * time.Second
		if k == 0 {
			want = 20 * time.Second
		}
		if in, set := c.armedIn(); !set || in != want {
			t.Fatalf("after scheduling at %v: timer set in %v (set %v), want in %v", d, in, set, want)
		}
	}
	c.advance(20 * time.Second)
	for k, d := range []time.Duration{20 * time.Second, 5 * time.Second, 10 * time.Second} {
		if got := targets[k].fires; len(got) != 1 || got[0]-start != d {
			t.Errorf("entry due at %v fired at %v", d, got)
		}
	}
	if c.wakes != 3 {
		t.Errorf("the wheel woke %d times for three entries, want 3", c.wakes)
	}
}

// A cancel leaves the timer set: the wheel wakes once for nothing, and
// then sleeps until the next entry of the slot, a turn later.
func TestWheelWakesOnceForACancelledEntry(t *testing.T) {
	w, c := newTestWheel()
	start := c.now()
	gone, goneT := newEntry(c)
	w.schedule(gone, start+5*time.Second)
	sameSlot, sameSlotT := newEntry(c)
	w.schedule(sameSlot, start+5*time.Second+wheelSlots*wheelTick)
	w.cancel(gone)
	c.advance(5 * time.Second)
	if in, set := c.armedIn(); c.wakes != 1 || !set || in != wheelSlots*wheelTick {
		t.Fatalf("after the cancelled entry's tick: %d wake-ups, timer set %v in %v; want 1, set in a turn", c.wakes, set, in)
	}
	c.advance(time.Minute)
	if len(goneT.fires) != 0 || len(sameSlotT.fires) != 1 || c.wakes != 2 {
		t.Fatalf("fires %v and %v, %d wake-ups; want none, one, 2", goneT.fires, sameSlotT.fires, c.wakes)
	}
}

// Entries further away than a turn of the wheel wait for later turns.
func TestWheelFarEntriesWaitForTheirTurn(t *testing.T) {
	w, c := newTestWheel()
	start := c.now()
	var targets []*testTarget
	for _, d := range []time.Duration{1, wheelSlots - 1, wheelSlots, wheelSlots + 1, 3*wheelSlots + 7} {
		e, tt := newEntry(c)
		w.schedule(e, start+d*wheelTick)
		targets = append(targets, tt)
	}
	c.advance(4 * wheelSlots * wheelTick)
	for i, d := range []time.Duration{1, wheelSlots - 1, wheelSlots, wheelSlots + 1, 3*wheelSlots + 7} {
		if got := targets[i].fires; len(got) != 1 || got[0]-start != d*wheelTick {
			t.Errorf("entry due after %v ticks fired at %v", d, got)
		}
	}
}

// A stalled process catches up in one tick and fires everything due,
// nothing early.
func TestWheelCatchesUpAfterAStall(t *testing.T) {
	w, c := newTestWheel()
	start := c.now()
	var targets []*testTarget
	for i := range 40 {
		e, tt := newEntry(c)
		w.schedule(e, start+time.Duration(i*50)*wheelTick)
		targets = append(targets, tt)
	}
	// The timer fires 1.5 s late, once.
	c.mu.Lock()
	c.t += 1500 * time.Millisecond
	c.set = false
	f := c.f
	c.mu.Unlock()
	f()
	for i, tt := range targets {
		due := i*50 <= 1500
		if (len(tt.fires) == 1) != due {
			t.Errorf("entry %d (due at %dms): fires %v after a stall to 1500ms", i, i*50, tt.fires)
		}
	}
}

// A request that stops while its fire waits in the tick's queue takes it
// out: cancel does not wait, and no goroutine runs it.
func TestWheelCancelTakesAQueuedFireOut(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	var queued []*wheelEntry
	var gen uint32
	w.dispatch = func(due []*wheelEntry, gens []uint32) { queued, gen = due, gens[0] }
	w.schedule(e, c.now()+time.Millisecond)
	c.advance(2 * time.Millisecond)
	if len(queued) != 1 || e.where != entryQueued {
		t.Fatalf("not queued: %v", e.where)
	}
	if ch := w.cancel(e); ch != nil {
		t.Fatal("cancel of a queued fire waits for it")
	}
	if w.startFire(e, gen) {
		t.Fatal("a cancelled fire was started")
	}
	if e.where != entryIdle || w.n != 0 {
		t.Fatalf("entry %v, %d listed", e.where, w.n)
	}
}

// A fire that runs when its request stops is waited for: cancel returns a
// channel closed when the fire returned.
func TestWheelCancelWaitsForARunningFire(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	var finish func()
	w.dispatch = func(due []*wheelEntry, gens []uint32) {
		if !w.startFire(due[0], gens[0]) {
			t.Fatal("not started")
		}
		finish = func() { w.fired(due[0]) }
	}
	w.schedule(e, c.now()+time.Millisecond)
	c.advance(2 * time.Millisecond)
	if finish == nil || e.firing != 1 {
		t.Fatalf("not firing: %d fires running", e.firing)
	}
	ch := w.cancel(e)
	if ch == nil {
		t.Fatal("cancel did not report the running fire")
	}
	select {
	case <-ch:
		t.Fatal("closed before the fire returned")
	default:
	}
	finish()
	checkCancelledAndReturned(t, w, e, ch)
}

// checkCancelledAndReturned checks that a cancel's channel is closed and
// the entry is off the wheel with no fire running.
func checkCancelledAndReturned(t *testing.T, w *wheel, e *wheelEntry, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	default:
		t.Fatal("not closed after the fire returned")
	}
	if e.where != entryIdle || e.firing != 0 || w.n != 0 {
		t.Fatalf("entry %v, %d fires running, %d listed", e.where, e.firing, w.n)
	}
}

// A fire that schedules the next one leaves the entry listed, and a cancel
// that waited for that fire takes the new schedule off too.
func TestWheelFireThatReschedules(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	var finish func()
	w.dispatch = func(due []*wheelEntry, gens []uint32) {
		if !w.startFire(due[0], gens[0]) {
			t.Fatal("a queued fire was not started")
		}
		finish = func() {
			w.schedule(due[0], c.now()+10*time.Millisecond)
			w.fired(due[0])
		}
	}
	w.schedule(e, c.now()+time.Millisecond)
	c.advance(time.Millisecond)
	finish()
	if e.where != entryListed || w.n != 1 {
		t.Fatalf("after a rescheduling fire: entry %v, %d listed", e.where, w.n)
	}
	finish = nil
	c.advance(5 * time.Millisecond)
	if finish != nil {
		t.Fatal("fired early")
	}
	c.advance(5 * time.Millisecond)
	if finish == nil {
		t.Fatal("the rescheduled fire did not come")
	}
	ch := w.cancel(e) // running, not yet rescheduled
	finish()          // reschedules while a cancel waits
	<-ch
	if e.where != entryListed {
		t.Fatalf("entry %v", e.where)
	}
	if w.cancel(e) != nil || w.n != 0 || e.where != entryIdle {
		t.Fatalf("the entry the waited-for fire rescheduled stays: %d listed", w.n)
	}
}

// queuedFire is a fire the wheel dispatched, with its generation.
type queuedFire struct {
	e   *wheelEntry
	gen uint32
}

// queueFires makes w's dispatch only record the fires, for the test to
// start them (or not) in an order of its own.
func queueFires(w *wheel) *[]queuedFire {
	var queue []queuedFire
	w.dispatch = func(due []*wheelEntry, gens []uint32) {
		for i := range due {
			queue = append(queue, queuedFire{due[i], gens[i]})
		}
	}
	return &queue
}

// An entry rescheduled while its fire waits in a tick's queue, and queued
// again by a later tick before a goroutine reached the first, fires once,
// under the newer generation.
func TestWheelRequeuedEntryFiresOnceWithItsNewGeneration(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	queue := queueFires(w)
	g1 := w.schedule(e, c.now()+time.Millisecond)
	c.advance(time.Millisecond)
	g2 := w.schedule(e, c.now()+time.Millisecond) // rescheduled while queued
	c.advance(time.Millisecond)
	if len(*queue) != 2 || (*queue)[0].gen != g1 || (*queue)[1].gen != g2 {
		t.Fatalf("queue %+v, want gens %d then %d", *queue, g1, g2)
	}
	var started []uint32
	for _, q := range *queue {
		if w.startFire(q.e, q.gen) {
			started = append(started, q.gen)
			w.fired(q.e)
		}
	}
	if len(started) != 1 || started[0] != g2 || e.where != entryIdle {
		t.Fatalf("started %v (want only %d), entry %v", started, g2, e.where)
	}
}

// A fire schedules the next one, and the wheel queues that next one before
// the first fire has returned (its goroutine descheduled between the 102
// and fired): the next fire still runs, and a cancel meanwhile waits for
// the fire still running. Were the entry marked idle when the first fire
// returned, the queued fire would be dropped and the request would never
// have a 102 again.
func TestWheelNextFireQueuedBeforeTheLastReturned(t *testing.T) {
	w, c := newTestWheel()
	e, _ := newEntry(c)
	queue := queueFires(w)
	g1 := w.schedule(e, c.now()+time.Millisecond)
	c.advance(time.Millisecond)
	if len(*queue) != 1 || !w.startFire(e, g1) {
		t.Fatalf("the first fire did not start: queue %+v", *queue)
	}
	g2 := w.schedule(e, c.now()+time.Millisecond) // the running fire schedules the next
	c.advance(time.Millisecond)                   // which the wheel queues at once
	w.fired(e)                                    // only now the first fire returns
	if len(*queue) != 2 || (*queue)[1].gen != g2 || e.where != entryQueued {
		t.Fatalf("queue %+v, entry %v; want the next fire (gen %d) queued", *queue, e.where, g2)
	}
	if !w.startFire(e, g2) {
		t.Fatal("the next fire, queued while the first was returning, was dropped")
	}

	// The same overlap, then a cancel: it waits for the fire still running
	// and drops the queued one.
	g3 := w.schedule(e, c.now()+time.Millisecond)
	c.advance(time.Millisecond)
	if len(*queue) != 3 || (*queue)[2].gen != g3 || e.where != entryQueued || e.firing != 1 {
		t.Fatalf("queue %+v, entry %v, %d fires running", *queue, e.where, e.firing)
	}
	ch := w.cancel(e)
	if ch == nil {
		t.Fatal("cancel did not report the fire still running")
	}
	if w.startFire(e, g3) {
		t.Fatal("a cancelled queued fire started")
	}
	w.fired(e)
	checkCancelledAndReturned(t, w, e, ch)
}

// heldWheelSite is the site of the tests whose wheel is held up: /stalled
// runs the behaviour "stalled" (delay 200ms, interval 600ms), every other
// path "slow" (delay 300ms, interval 400ms).
const heldWheelSite = `
http://127.0.0.1:{PORT} {
	handle /stalled {
		processing {
			delay 200ms
			interval 600ms
		}
		test_work stalled
	}
	handle {
		processing {
			delay 300ms
			interval 400ms
		}
		test_work slow
	}
}
`

// TestHTTP2InterimsOnTheGridNeverEarly: the 102s of streams that share an
// HTTP/2 connection fall due on the coalescing grid (interval/8, at most
// maxGrid), which may make one later but never earlier than its slot
// delay + k × interval, counted from when the client sent the request, and
// never systematically later. When the wheel was held up and every
// stream's second 102 went out late, the next ones return to their slots.
func TestHTTP2InterimsOnTheGridNeverEarly(t *testing.T) {
	harness.SetBehaviour(t, "slow", harness.AfterInterims(3, "done"))
	var holdOnce sync.Once
	harness.SetBehaviour(t, "stalled", func(w http.ResponseWriter, r *http.Request) error {
		if err := harness.AwaitInterims(r, 1); err != nil {
			return err
		}
		holdOnce.Do(func() { holdWheel(t, 1100*time.Millisecond) })
		return harness.AfterInterims(4, "done")(w, r)
	})
	port, _ := harness.StartCaddy(t, heldWheelSite)
	client := harness.H2CClient()
	const streams = 8
	// streamInterims sends the streams' requests for path together on the
	// client's one connection and returns when each 102 arrived, per
	// stream, since its request was sent.
	streamInterims := func(path string) [][]time.Duration {
		at := make([][]time.Duration, streams)
		var wg sync.WaitGroup
		for s := range streams {
			wg.Go(func() {
				var mu sync.Mutex
				start := time.Now()
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
					mu.Lock()
					defer mu.Unlock()
					if code == http.StatusProcessing {
						at[s] = append(at[s], time.Since(start))
					}
					return nil
				}}
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s?s=%d", port, path, s), nil)
				res, err := client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
				if err != nil {
					t.Errorf("%s stream %d: %v", path, s, err)
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || string(body) != "done" || res.ProtoMajor != 2 {
					t.Errorf("%s stream %d: %s %d %q", path, s, res.Proto, res.StatusCode, body)
				}
			})
		}
		wg.Wait()
		return at
	}

	const delay, interval = 300 * time.Millisecond, 400 * time.Millisecond
	for s, at := range streamInterims("/") {
		if len(at) < 3 || len(at) > 4 {
			t.Errorf("stream %d: %d 102s, want the 3 its handler waited for (a 4th at most)", s, len(at))
		}
		for k, a := range at {
			if slot := delay + time.Duration(k)*interval; a < slot || a > slot+gridSlack {
				t.Errorf("stream %d: 102 %d after %v, want within [%v, %v]", s, k, a, slot, slot+gridSlack)
			}
		}
	}

	for s, at := range streamInterims("/stalled") {
		if len(at) < 4 {
			t.Errorf("held wheel, stream %d: %d 102s, want 4", s, len(at))
			continue
		}
		if at[1] < 1200*time.Millisecond {
			t.Errorf("held wheel, stream %d: second 102 after %v, not held up", s, at[1])
		}
		checkBackOnGrid(t, fmt.Sprintf("held wheel, stream %d", s), 200*time.Millisecond, 600*time.Millisecond, at[2:]...)
	}
}

// TestBlockedFiresHoldBackNoOtherFire: more fires due in one tick than
// fireAll starts goroutines for, each blocked as a 102 to a stalled client
// blocks (every stream of an HTTP/2 connection whose client stopped
// reading), and one fire behind them. Once no goroutine has taken a fire
// for a whole tick, the wheel starts more, and the last fire runs while
// the others are still blocked. Releasing them ends every goroutine.
func TestBlockedFiresHoldBackNoOtherFire(t *testing.T) {
	c := &fakeClock{t: 1000 * time.Millisecond}
	w := newWheel(c)
	const stalled = 2*maxFireGoroutines + 10
	release := make(chan struct{})
	var blocked, running sync.WaitGroup
	var other *wheelEntry
	otherFired := make(chan struct{})
	blocked.Add(stalled)
	w.fire = func(e *wheelEntry, _ uint32) {
		if e == other {
			close(otherFired)
			return
		}
		running.Add(1)
		defer running.Done()
		blocked.Done()
		<-release
	}
	at := c.now() + 5*time.Millisecond
	for range stalled {
		w.schedule(new(wheelEntry), at)
	}
	other = new(wheelEntry)
	w.schedule(other, at)

	c.advance(5 * time.Millisecond)
	// A tick in which the first goroutines take their fires and block,
	// then one in which none took another: the ticks start more, until
	// every stalled fire is blocked and the other one has run.
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-otherFired:
		default:
			if time.Now().After(deadline) {
				t.Fatalf("the fire behind %d blocked ones never ran", stalled)
			}
			time.Sleep(time.Millisecond) // let the started goroutines take their fires
			c.advance(wheelTick)
			continue
		}
		break
	}
	blocked.Wait() // every stalled fire got a goroutine of its own
	w.mu.Lock()
	batches := len(w.batches)
	w.mu.Unlock()
	close(release)
	running.Wait()
	c.advance(wheelTick) // lets the finished batch go
	w.mu.Lock()
	defer w.mu.Unlock()
	if batches > 1 || len(w.batches) != 0 || w.wake != noTick {
		t.Fatalf("batches watched: %d while blocked (want at most 1), %d after (want 0); timer set for tick %d", batches, len(w.batches), w.wake)
	}
}
