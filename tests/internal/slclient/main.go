// Command slclient is the end-to-end tests' client: a separate process
// that opens files through a scanlockfs mount, or takes scan locks
// directly with lockmgr, and reports when each call started and returned
// on the system-wide monotonic clock, so that tests can prove that a call
// waited for another process's release.
//
// Interactive mode reads one command per line on standard input and
// answers on standard output:
//
//	open ID PATH FLAGS    -> start ID T, then ok ID T or err ID ERRNO T
//	close ID              -> start ID T (just before close), then ok ID T
//	read ID               -> ok ID T DATA (quoted)
//	write ID TEXT         -> ok ID T
//	lock ID SOURCE SCAN shared|exclusive   (lockmgr.Acquire, this process)
//	try ID SOURCE SCAN shared|exclusive    (lockmgr.TryAcquire)
//	unlock ID
//	put ID PATH SIZE SEED [rename]   write checker.Content(SIZE, SEED) to PATH (O_TRUNC, or a temporary file renamed over PATH)
//
// FLAGS letters: r (O_RDONLY), w (O_WRONLY), b (O_RDWR), t (O_TRUNC),
// a (O_APPEND), c (O_CREAT), n (O_NONBLOCK). End of input (or "quit")
// closes everything and exits; the loop is internal/testpeer's Serve.
//
// One-shot modes, for the no-lost-update test:
//
//	slclient incr-mount FILE N           read-modify-write FILE N times, opening it O_RDWR
//	slclient incr-direct SOURCE SCAN REL N   the same on SOURCE/SCAN/REL under lockmgr's exclusive lock
//	slclient check-mount FILE STOPFILE   read FILE until STOPFILE exists; fail on a half-written content
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testpeer"
	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
	"scanlockfs/tests/internal/checker"
)

func main() {
	if len(os.Args) > 1 {
		if err := oneShot(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "slclient:", err)
			os.Exit(1)
		}
		return
	}
	interactive()
}

// now is the system-wide monotonic clock, comparable across processes.
var now = testutil.Now

func parseFlags(s string) (int, error) {
	flags := 0
	acc := -1
	for _, c := range s {
		switch c {
		case 'r':
			acc = unix.O_RDONLY
		case 'w':
			acc = unix.O_WRONLY
		case 'b':
			acc = unix.O_RDWR
		case 't':
			flags |= unix.O_TRUNC
		case 'a':
			flags |= unix.O_APPEND
		case 'c':
			flags |= unix.O_CREAT
		case 'n':
			flags |= unix.O_NONBLOCK
		default:
			return 0, fmt.Errorf("unknown flag %q", c)
		}
	}
	if acc < 0 {
		return 0, fmt.Errorf("flags %q: no access mode (r, w or b)", s)
	}
	return flags | acc | unix.O_CLOEXEC, nil
}

// openRetry opens like C programs would, except that it retries EINTR
// caused by the Go runtime's own signals (the tests disable preemption
// signals, this is a second line).
func openRetry(path string, flags int) (int, error) { return testutil.OpenRetry(path, flags, 0o644) }

// client is interactive mode's state: what each ID names.
type client struct {
	out      *bufio.Writer
	fds      map[string]int
	leases   map[string]*lockmgr.Lease
	managers map[string]*lockmgr.Manager
}

func interactive() {
	c := &client{out: bufio.NewWriter(os.Stdout), fds: map[string]int{},
		leases: map[string]*lockmgr.Lease{}, managers: map[string]*lockmgr.Manager{}}
	if err := testpeer.Serve(os.Stdin, c.command); err != nil {
		fmt.Fprintln(os.Stderr, "slclient:", err)
	}
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	for _, l := range c.leases {
		l.Release()
	}
}

func (c *client) say(format string, args ...any) {
	fmt.Fprintf(c.out, format+"\n", args...)
	c.out.Flush()
}

// fail answers "err ID ERRNO T" for a command that has no start line.
func (c *client) fail(id string, err error) {
	c.say("err %s %s %d", id, checker.ErrName(err), now())
}

// call answers "start ID T" before fn and "ok ID T" or "err ID ERRNO T"
// after it, T taken as fn returned.
func (c *client) call(id string, fn func() error) {
	c.say("start %s %d", id, now())
	err := fn()
	t := now()
	if err != nil {
		c.say("err %s %s %d", id, checker.ErrName(err), t)
		return
	}
	c.say("ok %s %d", id, t)
}

// fd is the descriptor opened as id; it answers "bad" if there is none.
func (c *client) fd(id string) (int, bool) {
	fd, ok := c.fds[id]
	if !ok {
		c.say("bad %s not open", id)
	}
	return fd, ok
}

// command runs one command line; bad commands are answered, never fatal.
func (c *client) command(f []string) error {
	line := strings.Join(f, " ")
	if len(f) < 2 {
		c.say("bad - %q", line)
		return nil
	}
	cmd, id := f[0], f[1]
	switch {
	case cmd == "open" && len(f) == 4:
		c.open(id, f[2], f[3])
	case cmd == "close":
		if fd, ok := c.fd(id); ok {
			delete(c.fds, id)
			c.call(id, func() error { return unix.Close(fd) })
		}
	case cmd == "read":
		c.read(id)
	case cmd == "write" && len(f) >= 3:
		if fd, ok := c.fd(id); ok {
			if _, err := unix.Write(fd, []byte(strings.Join(f[2:], " "))); err != nil {
				c.fail(id, err)
			} else {
				c.say("ok %s %d", id, now())
			}
		}
	case (cmd == "lock" || cmd == "try") && len(f) == 5:
		c.lock(id, cmd == "try", f[2], f[3], f[4])
	case cmd == "unlock":
		l, ok := c.leases[id]
		if !ok {
			c.say("bad %s not locked", id)
			return nil
		}
		delete(c.leases, id)
		c.call(id, l.Release)
	case cmd == "put" && (len(f) == 5 || len(f) == 6):
		c.put(id, f[2:])
	default:
		c.say("bad %s unknown command %q", id, line)
	}
	return nil
}

func (c *client) open(id, path, flagLetters string) {
	flags, err := parseFlags(flagLetters)
	if err != nil {
		c.say("bad %s %v", id, err)
		return
	}
	c.call(id, func() error {
		fd, err := openRetry(path, flags)
		if err == nil {
			c.fds[id] = fd
		}
		return err
	})
}

func (c *client) read(id string) {
	fd, ok := c.fd(id)
	if !ok {
		return
	}
	buf := make([]byte, 1<<16)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		c.fail(id, err)
		return
	}
	c.say("ok %s %d %q", id, now(), buf[:n])
}

// lock takes scan of src in mode with lockmgr (TryAcquire if try).
func (c *client) lock(id string, try bool, src, scan, mode string) {
	m, err := c.manager(src)
	if err != nil {
		c.fail(id, err)
		return
	}
	md := lockmgr.Shared
	if mode == "exclusive" {
		md = lockmgr.Exclusive
	}
	c.call(id, func() error {
		var l *lockmgr.Lease
		if try {
			l, err = m.TryAcquire(scan, md, lockmgr.ProcessOwner())
		} else {
			l, err = m.Acquire(context.Background(), scan, md, lockmgr.ProcessOwner())
		}
		if err == nil {
			c.leases[id] = l
		}
		return err
	})
}

// manager is this process's lock manager of src, made on first use.
func (c *client) manager(src string) (*lockmgr.Manager, error) {
	if m := c.managers[src]; m != nil {
		return m, nil
	}
	m, err := lockmgr.New(src, lockmgr.WithStaleCleanup(false), lockmgr.WithTimeout(0))
	if err == nil {
		c.managers[src] = m
	}
	return m, err
}

// put is "put ID PATH SIZE SEED [rename]"; args starts at PATH.
func (c *client) put(id string, args []string) {
	size, err1 := strconv.Atoi(args[1])
	seed, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		c.say("bad %s put SIZE SEED", id)
		return
	}
	if err := put(args[0], size, seed, len(args) == 4 && args[3] == "rename"); err != nil {
		c.fail(id, err)
		return
	}
	c.say("ok %s %d", id, now())
}

func put(path string, size, seed int, rename bool) error {
	target := path
	if rename {
		target = path + ".tmp"
	}
	if err := os.WriteFile(target, checker.Content(size, seed), 0o644); err != nil {
		return err
	}
	if rename {
		return os.Rename(target, path)
	}
	return nil
}

func oneShot(mode string, args []string) error {
	switch {
	case mode == "incr-mount" && len(args) == 2:
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		for range n {
			if err := incrMount(args[0]); err != nil {
				return err
			}
		}
		return nil
	case mode == "incr-direct" && len(args) == 4:
		n, err := strconv.Atoi(args[3])
		if err != nil {
			return err
		}
		m, err := lockmgr.New(args[0], lockmgr.WithStaleCleanup(false), lockmgr.WithTimeout(2*time.Minute))
		if err != nil {
			return err
		}
		defer m.Close()
		path := filepath.Join(args[0], args[1], args[2])
		for range n {
			l, err := m.Acquire(context.Background(), args[1], lockmgr.Exclusive, lockmgr.ProcessOwner())
			if err != nil {
				return err
			}
			err = incrFile(path, unix.O_RDWR)
			if rerr := l.Release(); err == nil {
				err = rerr
			}
			if err != nil {
				return err
			}
		}
		return nil
	case mode == "check-mount" && len(args) == 2:
		return checkMount(args[0], args[1])
	}
	return fmt.Errorf("usage: slclient [incr-mount FILE N | incr-direct SOURCE SCAN REL N | check-mount FILE STOPFILE]")
}

func incrMount(path string) error { return incrFile(path, unix.O_RDWR) }

func incrFile(path string, flags int) error {
	fd, err := openRetry(path, flags|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<16)
	k, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return err
	}
	n := 0
	if k > 0 {
		if n, err = checker.ParseCounter(buf[:k]); err != nil {
			return err
		}
	}
	next := checker.CounterContent(n + 1)
	if err := unix.Ftruncate(fd, 0); err != nil {
		return err
	}
	half := len(next) / 2
	if _, err := unix.Pwrite(fd, next[:half], 0); err != nil {
		return err
	}
	time.Sleep(50 * time.Microsecond)
	if _, err := unix.Pwrite(fd, next[half:], int64(half)); err != nil {
		return err
	}
	return nil
}

func checkMount(path, stop string) error {
	buf := make([]byte, 1<<16)
	reads := 0
	for {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		k, err := unix.Pread(fd, buf, 0)
		unix.Close(fd)
		if err != nil {
			return err
		}
		if k > 0 {
			if _, err := checker.ParseCounter(buf[:k]); err != nil {
				return fmt.Errorf("reader saw a half-written file after %d reads: %w", reads, err)
			}
		}
		reads++
	}
	fmt.Println("reads", reads)
	return nil
}
