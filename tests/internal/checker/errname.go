package checker

import (
	"errors"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// ErrName is how a helper program names an error in its output and in
// Log.Fail, in one word: the errno's name (EAGAIN), TIMEOUT, WOULDBLOCK or
// DEADLOCK for lockmgr's refusals, or the message with its spaces replaced.
func ErrName(err error) string {
	if errors.Is(err, lockmgr.ErrLockFile) {
		// The message names the lock file and the fix; it wraps the OS
		// error too, whose name alone would say less.
		return strings.ReplaceAll(err.Error(), " ", "_")
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return strconv.Itoa(int(errno))
	}
	switch {
	case errors.Is(err, lockmgr.ErrTimeout):
		return "TIMEOUT"
	case errors.Is(err, lockmgr.ErrWouldBlock):
		return "WOULDBLOCK"
	case errors.Is(err, lockmgr.ErrDeadlock):
		return "DEADLOCK"
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}
