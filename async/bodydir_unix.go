//go:build unix

package async

import (
	"errors"
	"syscall"
)

// processAlive sends signal 0, which checks the pid without signalling
// (kill(2)): ESRCH means no such process; EPERM means one that is not ours.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
