package main

// The stacks that request goroutines hold. The runtime's count of stack
// memory (/memory/classes/heap/stacks:bytes) says little about one
// request's stack: it includes the stacks that exited goroutines keep for
// reuse and the runtime's free lists, and what it holds from an earlier
// run moves with the runs' order. So the hold handler takes a census of
// its own goroutine's stack instead, once when it starts waiting and once
// after it wrote the response, and the runs compare those.

import (
	"math/bits"
	"sync/atomic"
)

// stackCensus counts goroutines by the size of their stack, which the
// runtime allocates in powers of two from 2 KiB, doubling (by copying the
// whole stack) whenever a call needs more.
type stackCensus struct {
	bySize [40]atomic.Int64 // index: log2 of the size
}

// note counts the calling goroutine's stack.
func (c *stackCensus) note() {
	if size, ok := stackSize(); ok && size > 0 {
		c.bySize[bits.Len(uint(size))-1].Add(1)
	}
}

// take returns the counts by size in bytes, and starts the census afresh.
func (c *stackCensus) take() map[int]int64 {
	m := map[int]int64{}
	for i := range c.bySize {
		if n := c.bySize[i].Swap(0); n > 0 {
			m[1<<i] = n
		}
	}
	return m
}

// meanStack is the mean stack size of a census, in bytes; 0 if it counted
// nothing (on a platform without stackSize, or a run on Go's own server).
func meanStack(m map[int]int64) float64 {
	var sum, n int64
	for size, count := range m {
		sum += int64(size) * count
		n += count
	}
	if n == 0 {
		return 0
	}
	return float64(sum) / float64(n)
}

var (
	// waitingStacks is the census of request goroutines as they start
	// waiting, in the hold handler: the stack a waiting request holds.
	waitingStacks stackCensus
	// writtenStacks is taken after the handler wrote its response: a
	// goroutine whose response path outgrew its stack has doubled it.
	writtenStacks stackCensus
)
