package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/sirupsen/logrus"

	"scanlockfs/lockmgr"
)

func TestToErrnoMapsWrappedErrors(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	wrap := func(err error) error { return fmt.Errorf("scan x: %w", err) }
	cases := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{wrap(lockmgr.ErrTimeout), syscall.EBUSY},
		// The manager wraps the context's error in ErrTimeout; both are there.
		{fmt.Errorf("%w: after 1s: %w", lockmgr.ErrTimeout, context.DeadlineExceeded), syscall.EBUSY},
		{wrap(lockmgr.ErrWouldBlock), syscall.EAGAIN},
		{wrap(context.Canceled), syscall.EINTR},
		{wrap(lockmgr.ErrDeadlock), syscall.EDEADLK},
		{lockmgr.ErrClosed, syscall.ESHUTDOWN},
		{wrap(lockmgr.ErrLockFile), syscall.EIO},
		// At the descriptor limit the program gets EMFILE, not EIO.
		{fmt.Errorf("%w /l/s.lock: %w (hint)", lockmgr.ErrLockFile, syscall.EMFILE), syscall.EMFILE},
		{fmt.Errorf("%w /l/s.lock: %w (hint)", lockmgr.ErrLockFile, syscall.ENFILE), syscall.ENFILE},
		{wrap(syscall.ENOSPC), syscall.ENOSPC},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, syscall.EACCES},
		{errors.New("something odd"), syscall.EIO},
		{wrap(lockmgr.ErrInvalidScanID), syscall.EIO},
	}
	for _, c := range cases {
		if got := toErrno(l, c.err); got != c.want {
			t.Errorf("toErrno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestToErrnoLogsUnknownErrors(t *testing.T) {
	l := logrus.New()
	var buf bytesBuffer
	l.SetOutput(&buf)
	toErrno(l, errors.New("surprise"))
	if !buf.contains("surprise") {
		t.Fatalf("unknown error not logged; log: %q", buf.String())
	}
}
