// Package testutil is the test support that lockmgr's tests, the
// end-to-end tests, their helper programs and the benchmark share: the
// FUSE requirement check (which fails rather than skips under CI=true),
// the cross-process clock, buffers that a child process may write while
// the test reads them (Buffer, Tail) and child processes that signal
// readiness (StartChild), and snapshots of a directory tree to prove
// that nothing changed (TreeSnapshot). It is for tests and their helpers
// only.
package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// Must fails tb with err, if err is not nil.
func Must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// RequireRoot skips tb unless it runs as root; why says what needs root.
func RequireRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: " + why)
	}
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

// Tail keeps the last 4 KiB written to it: a child process's stderr, for
// error messages.
type Tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

// String returns what is kept, without surrounding white space.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// OpenRetry is open(2) as C programs' callers and Python see it: it
// retries EINTR, which the Go runtime's own signals cause.
func OpenRetry(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, perm)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// ReadLines calls each with every line read from r (a child's stdout),
// up to 64 MiB a line, and returns the error that ended the reading, if
// it was not the end of r.
func ReadLines(r io.Reader, each func(line string)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		each(sc.Text())
	}
	return sc.Err()
}

// StartChild starts cmd, a child that prints the line ready once it is
// set up and then waits until its standard input ends, and returns once
// it has read that line. stop (also the test's cleanup) ends the child's
// input and waits for it to exit.
func StartChild(tb testing.TB, cmd *exec.Cmd, ready string) (stop func()) {
	tb.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	stop = sync.OnceFunc(func() {
		in.Close()
		_ = cmd.Wait()
	})
	tb.Cleanup(stop)
	if l, err := bufio.NewReader(out).ReadString('\n'); err != nil || l != ready+"\n" {
		tb.Fatalf("%s: said %q (%v), want %q", cmd.Args[0], l, err, ready)
	}
	return stop
}

// TreeSnapshot describes every entry under root, one line each in path
// order: path relative to root, mode, size, modification time and, for
// a regular file, its content. Two snapshots are equal when nothing under
// root changed.
func TreeSnapshot(tb testing.TB, root string) string {
	tb.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d", strings.TrimPrefix(p, root), fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}
