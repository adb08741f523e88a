// Package testutil is the test support that lockmgr's tests, the
// end-to-end tests, their helper programs and the benchmark share: the
// FUSE requirement check (which fails rather than skips under CI=true),
// the cross-process clock, and a buffer that a child process may write
// while the test reads it. It is for tests and their helpers only.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// FUSEMissing says why FUSE mounts cannot work here, or "" if they can:
// /dev/fuse must open, and a user other than root needs fusermount3.
// It is checked once per process.
var FUSEMissing = sync.OnceValue(func() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open /dev/fuse: %v", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and no fusermount3 (apt-get install fuse3)"
		}
	}
	return ""
})

// RequireFUSE skips tb where FUSE is unavailable, or fails it under
// CI=true, where a test that silently stopped running would rot.
func RequireFUSE(tb testing.TB) {
	tb.Helper()
	why := FUSEMissing()
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("FUSE unavailable under CI=true: %s", why)
	}
	tb.Skipf("FUSE unavailable: %s", why)
}

// Now is CLOCK_MONOTONIC in nanoseconds: the system-wide clock, so that
// time stamps of different processes (Go helpers, Python's
// time.monotonic_ns) compare.
func Now() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Buffer collects a process's output (cmd.Stdout, cmd.Stderr) for a
// test to read while the process still writes it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
