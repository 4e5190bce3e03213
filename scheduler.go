package processing

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// The scheduler: one hashed timer wheel for every waiting request of the
// process (Varghese and Lauck's scheme 6, as in Netty's HashedWheelTimer).
// A timer per request costs a heap operation on every insert and cancel and
// a goroutine start on every fire; the wheel inserts and cancels in O(1)
// under one lock, and fires the requests due in one tick together, so that
// the process wakes once for all of them (see Handler.grid).
//
// Time on the wheel is counted in ticks of wheelTick from the scheduler's
// clock. An entry due at time t goes into the slot of tick ceil(t/wheelTick)
// and fires when the wheel processes that tick, which it never does before
// the tick's time: a 102 is never early, and late by at most one tick plus
// the wake-up latency of the process.
//
// The wheel's one timer wakes it only for a tick that holds an entry, as
// Kafka's SystemTimer sleeps on a DelayQueue of its buckets
// (https://github.com/apache/kafka/blob/trunk/server-common/src/main/java/org/apache/kafka/server/util/timer/SystemTimer.java),
// rather than at every tick as Netty's HashedWheelTimer does
// (https://github.com/netty/netty/blob/4.1/common/src/main/java/io/netty/util/HashedWheelTimer.java):
// requests whose next 102 is far away cost no wake-ups meanwhile. Each slot
// keeps the earliest tick of its entries (slotDue); a wake-up processes the
// ticks passed and sets the timer for the earliest slotDue, and a schedule
// sets it earlier when its entry is due before the tick the timer is set for.

const (
	// wheelTick is the wheel's resolution. 1 ms keeps the shortest
	// intervals of the tests (1 ms) meaningful; the coarser grid that
	// coalesces 102s is the handler's (see Handler.grid).
	wheelTick = time.Millisecond
	// wheelSlots is a power of two; the wheel spans wheelSlots ticks per
	// turn. An entry due further away waits in its slot for later turns;
	// its slot is walked only when a tick of the slot is due, so at its
	// own tick or an earlier entry's of the same slot.
	wheelSlots = 512

	// noTick stands for no tick: the slotDue of an empty slot, the wake
	// of a wheel whose timer is not set.
	noTick = math.MaxInt64
)

// clock is the scheduler's view of time, injectable for its tests.
type clock interface {
	// now is the time since an arbitrary fixed origin, monotonic.
	now() time.Duration
	// afterFunc runs f on its own goroutine after d.
	afterFunc(d time.Duration, f func()) clockTimer
}

// clockTimer is the part of *time.Timer the wheel uses.
type clockTimer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// monoClock is the real clock: the monotonic reading only (time.Since on a
// time with a monotonic reading skips the wall clock).
type monoClock struct{}

// monoBase anchors monoClock.
var monoBase = time.Now()

func (monoClock) now() time.Duration { return time.Since(monoBase) }

func (monoClock) afterFunc(d time.Duration, f func()) clockTimer { return time.AfterFunc(d, f) }

// wheelEntry is one scheduled fire; a request embeds one and reuses it for
// each of its 102s.
type wheelEntry struct {
	// writer is the request the entry belongs to, whose due is the fire.
	// Set when the writer is made, read-only after; nil in the wheel's
	// tests, which replace the fire.
	writer *interimWriter

	// Guarded by the wheel's mu.
	prev, next *wheelEntry
	tick       int64 // the tick it is due at

	// gen is the generation of the entry's latest schedule, which its
	// fire carries; a fire of an older one is stale. Written only by
	// schedule, under the wheel's mu, and in production also under the
	// lock of the writer the entry belongs to, which due reads it under.
	gen   uint32
	where entryWhere // guarded by the wheel's mu
	// firing is how many fires of the entry are running, guarded by the
	// wheel's mu. It is kept apart from where: a fire that scheduled the
	// next one may still be returning when the wheel queues that next one
	// (its goroutine descheduled between the 102 and fired), and the entry
	// is then queued and firing at once. Usually one; the fires' dues take
	// the writer's lock in turn.
	firing uint16
}

// entryWhere is where an entry stands on the wheel.
type entryWhere uint8

const (
	entryIdle   entryWhere = iota // not scheduled
	entryListed                   // in a slot, waiting for its tick
	entryQueued                   // due, waiting for a fire goroutine to take it
)

// wheel is the scheduler.
type wheel struct {
	// clock is read only under mu (advance, armLocked), so that a test
	// may stop it under mu on the live wheel
	// (TestStalledHTTP2ClientHoldsBackNoOtherRequest).
	clock clock

	// mu guards everything below. Lock order: a writer's stateMu, then
	// this.
	mu     sync.Mutex
	slots  [wheelSlots]wheelEntry // sentinels of circular lists
	cursor int64                  // the last tick processed
	n      int                    // entries listed
	// slotDue is, for each slot, a tick no later than the earliest tick
	// of its entries, or noTick when it is empty. Processing a slot sets
	// it exactly; a cancel leaves it as it was, so that the slot may wake
	// the wheel once for nothing.
	slotDue [wheelSlots]int64
	// wake is the tick the timer is set for, or noTick when it is not:
	// the earliest slotDue, or the next tick while a batch of fires is
	// watched (see watchLocked).
	wake  int64
	timer clockTimer // made at the first arm
	// waiters holds, for an entry with fires running, a channel that is
	// closed when the last of them has returned (see cancel). It is rarely
	// needed (a request ending while its 102 is being written), so the
	// entries, one per waiting request, do not carry the field.
	waiters map[*wheelEntry]chan struct{}
	// batches are the ticks' fires that the goroutines fireAll started
	// may not all have taken yet (see watchLocked).
	batches []*fireBatch
	// dispatch starts the fires of the entries due in one tick, each with
	// the generation it was scheduled with; fireAll in production,
	// replaced in the wheel's tests. For each entry it must call
	// startFire, and if that says so run the fire and then call fired.
	dispatch func(due []*wheelEntry, gens []uint32)
	// fire is what fireAll runs for an entry: its writer's due in
	// production, replaced in the wheel's tests.
	fire func(e *wheelEntry, gen uint32)
}

// fireBatch is the fires of one tick, taken in turn by the goroutines
// fireAll starts.
type fireBatch struct {
	due  []*wheelEntry
	gens []uint32
	next atomic.Int32 // the index of the next fire to take
	// seen is next as watchLocked found it at the previous tick; guarded
	// by the wheel's mu.
	seen int32
}

func newWheel(c clock) *wheel {
	w := &wheel{clock: c, wake: noTick}
	for i := range w.slots {
		w.slots[i].prev, w.slots[i].next = &w.slots[i], &w.slots[i]
		w.slotDue[i] = noTick
	}
	w.dispatch = w.fireAll
	w.fire = func(e *wheelEntry, gen uint32) { e.writer.due(gen) }
	return w
}

// schedule puts e on the wheel to fire at time at (on the wheel's clock),
// replacing any earlier schedule of e, and returns the generation its fire
// will carry. A time already passed fires within a tick.
func (w *wheel) schedule(e *wheelEntry, at time.Duration) uint32 {
	tick := int64((at + wheelTick - 1) / wheelTick)
	w.mu.Lock()
	if e.prev != nil {
		w.unlinkLocked(e)
	}
	if tick <= w.cursor {
		tick = w.cursor + 1
	}
	// A queued fire is stale now (its generation is): its goroutine
	// skips it.
	e.gen++
	e.tick = tick
	e.where = entryListed
	w.linkLocked(e)
	w.armLocked(tick)
	gen := e.gen
	w.mu.Unlock()
	return gen
}

// armLocked sets the timer to wake the wheel at tick's time, unless it is
// set for that tick or an earlier one. So an insert reads the clock and
// resets the timer only when it is due before everything else listed.
func (w *wheel) armLocked(tick int64) {
	if tick >= w.wake {
		return
	}
	w.wake = tick
	// Go's timers never fire early (time.AfterFunc waits at least d), and
	// a d already passed fires at once.
	d := max(time.Duration(tick)*wheelTick-w.clock.now(), 0)
	if w.timer == nil {
		w.timer = w.clock.afterFunc(d, w.advance)
	} else {
		w.timer.Reset(d)
	}
}

// cancel takes e off the wheel, and out of the queue of a tick's fires if
// no goroutine has taken it yet, so that a request never waits behind the
// writes of others. It returns a channel that is closed when the fires of
// e already running have returned, or nil when none is. The caller must
// not hold the lock of e's writer: the fires take it.
func (w *wheel) cancel(e *wheelEntry) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.where == entryListed {
		w.unlinkLocked(e)
	}
	// A queued fire's goroutine finds the entry idle and skips it.
	e.where = entryIdle
	if e.firing == 0 {
		return nil
	}
	ch := w.waiters[e]
	if ch == nil {
		if w.waiters == nil {
			w.waiters = make(map[*wheelEntry]chan struct{})
		}
		ch = make(chan struct{})
		w.waiters[e] = ch
	}
	return ch
}

// startFire takes a queued entry for the fire of generation gen, unless it
// was cancelled or rescheduled since: a rescheduled entry may already sit
// in a later tick's queue under a newer generation, and that fire is the
// one to run.
func (w *wheel) startFire(e *wheelEntry, gen uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.where != entryQueued || e.gen != gen {
		return false
	}
	e.where = entryIdle
	e.firing++
	return true
}

// fired records that a running fire of e has returned. Where the entry
// stands is the business of its schedule: listed again by the fire, queued
// again by a tick since, or idle.
func (w *wheel) fired(e *wheelEntry) {
	w.mu.Lock()
	e.firing--
	if e.firing == 0 {
		if ch, ok := w.waiters[e]; ok {
			close(ch)
			delete(w.waiters, e)
		}
	}
	w.mu.Unlock()
}

func (w *wheel) linkLocked(e *wheelEntry) {
	i := e.tick & (wheelSlots - 1)
	s := &w.slots[i]
	e.prev, e.next = s.prev, s
	s.prev.next = e
	s.prev = e
	w.slotDue[i] = min(w.slotDue[i], e.tick)
	w.n++
}

func (w *wheel) unlinkLocked(e *wheelEntry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	if i := e.tick & (wheelSlots - 1); w.slots[i].next == &w.slots[i] {
		w.slotDue[i] = noTick
	}
	e.prev, e.next = nil, nil
	w.n--
}

// advance runs on the timer's goroutine, when the tick the timer was set
// for has come. It processes every tick up to now (several, if the process
// was busy or the wheel slept), dispatches what is due, and sets the timer
// for the next tick that holds an entry, or the next tick at all while a
// batch of fires is watched. With nothing listed and nothing watched the
// timer stays unset until the next schedule, or until fireAll adds this
// tick's batch.
func (w *wheel) advance() {
	var due []*wheelEntry
	var gens []uint32
	w.mu.Lock()
	w.wake = noTick // the timer has fired
	target := int64(w.clock.now() / wheelTick)
	if target > w.cursor {
		// After a sleep longer than a turn, one pass over every slot
		// finds everything due.
		w.cursor = max(w.cursor, target-wheelSlots)
		for w.cursor < target {
			w.cursor++
			w.takeDueLocked(&due, &gens)
		}
		w.watchLocked()
	}
	next := int64(noTick)
	if len(w.batches) > 0 {
		next = w.cursor + 1
	}
	if w.n > 0 {
		// Every slotDue is past the cursor here: the pass above walked
		// each slot whose slotDue it reached.
		for _, t := range w.slotDue {
			next = min(next, t)
		}
	}
	w.armLocked(next)
	w.mu.Unlock()
	if len(due) > 0 {
		w.dispatch(due, gens)
	}
}

// takeDueLocked queues the entries of the cursor's slot that are due by the
// cursor's tick, and sets the slot's slotDue to the earliest tick left in
// it. A slot whose slotDue is later holds nothing due and is not walked.
func (w *wheel) takeDueLocked(due *[]*wheelEntry, gens *[]uint32) {
	i := w.cursor & (wheelSlots - 1)
	if w.slotDue[i] > w.cursor {
		return
	}
	earliest := int64(noTick)
	s := &w.slots[i]
	for e := s.next; e != s; {
		next := e.next
		if e.tick <= w.cursor {
			w.unlinkLocked(e)
			e.where = entryQueued
			*due = append(*due, e)
			*gens = append(*gens, e.gen)
		} else {
			earliest = min(earliest, e.tick)
		}
		e = next
	}
	w.slotDue[i] = earliest
}

// maxFireGoroutines is how many goroutines fireAll starts for the 102s due
// in one tick, and how many more watchLocked starts at a time. A goroutine
// per 102 would start as many as there are requests whose 102s fall due
// together (all of them, for requests that started together), and the
// runtime keeps every goroutine's descriptor for the life of the process.
const maxFireGoroutines = 64

// fireAll sends the 102s due in one tick off the wheel's goroutine, on up
// to maxFireGoroutines goroutines that each take the next due entry until
// none is left. A write blocked on one client holds up only the goroutine
// making it: HTTP/1.1 flushes every 1xx, so a client that stops reading
// blocks it once its socket buffer is full, and x/net's WriteHeader for an
// HTTP/2 1xx waits until the connection's writer has written the frame,
// which a connection whose client stopped reading never does. Every stream
// of such a connection blocks its goroutine, and a client may hold more
// streams than maxFireGoroutines: watchLocked then starts more goroutines
// for the rest of the tick's fires.
func (w *wheel) fireAll(due []*wheelEntry, gens []uint32) {
	// seen starts below any index: the first watch only takes note.
	b := &fireBatch{due: due, gens: gens, seen: -1}
	n := min(len(due), maxFireGoroutines)
	if n < len(due) {
		// Only a batch with more fires than goroutines can be held up.
		// The wheel wakes at every tick while it has one to watch.
		w.mu.Lock()
		w.batches = append(w.batches, b)
		w.armLocked(w.cursor + 1)
		w.mu.Unlock()
	}
	for range n {
		go w.fireFrom(b)
	}
}

// fireFrom runs b's fires, taking the next one until none is left.
func (w *wheel) fireFrom(b *fireBatch) {
	for {
		i := int(b.next.Add(1)) - 1
		if i >= len(b.due) {
			return
		}
		if e, gen := b.due[i], b.gens[i]; w.startFire(e, gen) {
			w.fire(e, gen)
			w.fired(e)
		}
	}
}

// watchLocked runs at every tick the wheel processes, which is every tick
// while a batch is watched (advance sets the timer for the next one). A
// batch of which no goroutine took a fire for a whole tick has every
// goroutine blocked in a write (or the process is starved of CPU): it gets
// maxFireGoroutines more. So a client that stops reading, with any number
// of streams, holds back another request's 102 by about a tick for every
// maxFireGoroutines of its streams due in the same tick, and the
// goroutines started never outnumber the blocked writes by more than
// maxFireGoroutines per batch.
// A batch whose fires are all taken is let go; its goroutines end with
// their last fire.
func (w *wheel) watchLocked() {
	kept := w.batches[:0]
	for _, b := range w.batches {
		taken := b.next.Load()
		if int(taken) >= len(b.due) {
			continue
		}
		if taken == b.seen {
			for range min(len(b.due)-int(taken), maxFireGoroutines) {
				go w.fireFrom(b)
			}
		}
		b.seen = taken
		kept = append(kept, b)
	}
	clear(w.batches[len(kept):])
	w.batches = kept
}

// wheels holds the process's one wheel, shared by every handler of every
// config: requests of an old config keep their 102s across a reload, since
// the new config's handlers take the wheel before the old ones let it go.
var wheels = caddy.NewUsagePool()

const wheelKey = "processing.wheel"

// sharedWheel is a wheel kept in the usage pool.
type sharedWheel struct{ *wheel }

// Destruct implements caddy.Destructor. The wheel stops by itself when
// nothing waits; a wheel let go with requests still waiting goes on until
// they are done.
func (sharedWheel) Destruct() error { return nil }

// acquireWheel returns the process's wheel; releaseWheel must follow.
func acquireWheel() (*wheel, error) {
	v, _, err := wheels.LoadOrNew(wheelKey, func() (caddy.Destructor, error) {
		return sharedWheel{newWheel(monoClock{})}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(sharedWheel).wheel, nil
}

func releaseWheel() {
	_, _ = wheels.Delete(wheelKey)
}
