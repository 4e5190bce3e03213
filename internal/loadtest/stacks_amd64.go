package main

// goroutineStack returns the bounds of the calling goroutine's stack: the
// first field of the runtime's g, whose offset the runtime's cgo code
// relies on too (runtime2.go: "offset known to runtime/cgo").
func goroutineStack() (lo, hi uintptr)

// stackSize is the size of the stack the calling goroutine holds.
func stackSize() (uintptr, bool) {
	lo, hi := goroutineStack()
	return hi - lo, true
}
