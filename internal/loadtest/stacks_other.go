//go:build !amd64

package main

// stackSize is not available here: the census counts nothing.
func stackSize() (uintptr, bool) { return 0, false }
