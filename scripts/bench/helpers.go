package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// Helper modes: this binary re-executed as a client or lock peer, driven
// by lines on stdin and answering on stdout. Timestamps are
// CLOCK_MONOTONIC nanoseconds, comparable across processes.
const (
	helperReader   = "reader"   // 6: "read DIR N" -> "done START END BYTES"
	helperHolder   = "holder"   // 8, 9: "open r|w PATH", "openlist r|w FILE", "close"
	helperLockPeer = "lockpeer" // 7: the lock peer protocol, see internal/testpeer/plantdb_peer.py
)

// startHelper runs this binary in a helper mode.
func (b *bench) startHelper(name, mode string, args ...string) (*proc, error) {
	argv := append([]string{b.selfBin}, args...)
	// No asynchronous preemption: its signals would interrupt blocking
	// FUSE calls and add INTERRUPT requests to what is measured.
	env := []string{helperEnv + "=" + mode, "GODEBUG=asyncpreemptoff=1"}
	return b.procs.start(name, argv, env, nil, false)
}

func helperMain(mode string, args []string) int {
	var err error
	switch mode {
	case helperReader:
		err = readerHelper()
	case helperHolder:
		err = holderHelper()
	case helperLockPeer:
		err = lockPeerHelper(args)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", mode, err)
		return 1
	}
	return 0
}

func lines(fn func(f []string) error) error {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return nil
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return sc.Err()
}

// readerHelper reads whole files for workload 6.
func readerHelper() error {
	buf := make([]byte, 64<<10)
	fmt.Println("ready")
	return lines(func(f []string) error {
		if f[0] != "read" || len(f) != 3 {
			return fmt.Errorf("bad command %q", f)
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return err
		}
		start := monoNow()
		var total int64
		for i := 0; i < n; i++ {
			p := filepath.Join(f[1], fmt.Sprintf("f%05d", i))
			fd, err := openRetry(p, unix.O_RDONLY, 0)
			if err != nil {
				return fmt.Errorf("open %s: %w", p, err)
			}
			k, err := readFull(fd, buf)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
			total += k
		}
		fmt.Println("done", start, monoNow(), total)
		return nil
	})
}

// holderHelper opens files and holds them until told to close, for the
// wake-up and memory workloads.
func holderHelper() error {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
	}
	defer closeAll()
	fmt.Println("ready")
	return lines(func(f []string) error {
		switch {
		case (f[0] == "open" || f[0] == "openlist") && len(f) == 3:
			flags := unix.O_RDONLY
			if f[1] == "w" {
				flags = unix.O_WRONLY
			}
			paths := []string{f[2]}
			if f[0] == "openlist" {
				data, err := os.ReadFile(f[2])
				if err != nil {
					return err
				}
				paths = strings.Fields(string(data))
			}
			fmt.Println("opening", monoNow())
			for _, p := range paths {
				fd, err := openRetry(p, flags, 0)
				if err != nil {
					return fmt.Errorf("open %s: %w", p, err)
				}
				fds = append(fds, fd)
			}
			fmt.Println("opened", monoNow(), len(paths))
		case f[0] == "close":
			fmt.Println("closing", monoNow())
			closeAll()
			fmt.Println("closed", monoNow())
		default:
			return fmt.Errorf("bad command %q", f)
		}
		return nil
	})
}

// lockPeerHelper is the Go side of workload 7: ROOT SCAN, then the
// command protocol that internal/testpeer/plantdb_peer.py (serve) speaks too.
func lockPeerHelper(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: lockpeer ROOT SCAN")
	}
	root, scan := args[0], args[1]
	m, err := lockmgr.New(root)
	if err != nil {
		return err
	}
	defer m.Close()
	owner := lockmgr.ProcessOwner()
	var held *lockmgr.Lease
	var readers struct {
		stop      atomic.Bool
		done      chan struct{}
		intervals []int64
		err       error
	}
	var out sync.Mutex
	say := func(a ...any) {
		out.Lock()
		fmt.Println(a...)
		out.Unlock()
	}
	say("ready")
	err = lines(func(f []string) error {
		switch f[0] {
		case "acquire":
			mode, timeout, err := parseAcquire(f)
			if err != nil {
				return err
			}
			t0 := monoNow()
			say("waiting", t0)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			l, err := m.Acquire(ctx, scan, mode, owner)
			t1 := monoNow()
			cancel()
			switch {
			case err == nil:
				held = l
				say("ok", t0, t1)
			case errors.Is(err, lockmgr.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
				say("timeout", t0, t1)
			default:
				return err
			}
		case "release":
			if held == nil {
				return errors.New("release without a lock")
			}
			t0 := monoNow()
			err := held.Release()
			t1 := monoNow()
			held = nil
			if err != nil {
				return err
			}
			say("released", t0, t1)
		case "loop":
			if len(f) != 3 {
				return fmt.Errorf("bad command %q", f)
			}
			mode, err := parseMode(f[1])
			if err != nil {
				return err
			}
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return err
			}
			start := monoNow()
			for i := 0; i < n; i++ {
				l, err := m.Acquire(context.Background(), scan, mode, owner)
				if err != nil {
					return err
				}
				if err := l.Release(); err != nil {
					return err
				}
			}
			say("loop", monoNow()-start)
		case "readers":
			if len(f) != 2 {
				return fmt.Errorf("bad command %q", f)
			}
			us, err := strconv.Atoi(f[1])
			if err != nil {
				return err
			}
			hold := time.Duration(us) * time.Microsecond
			readers.done = make(chan struct{})
			go func() {
				defer close(readers.done)
				for !readers.stop.Load() {
					l, err := m.Acquire(context.Background(), scan, lockmgr.Shared, owner)
					if err != nil {
						readers.err = err
						return
					}
					t0 := monoNow()
					time.Sleep(hold)
					t1 := monoNow()
					if err := l.Release(); err != nil {
						readers.err = err
						return
					}
					readers.intervals = append(readers.intervals, t0, t1)
				}
			}()
			say("reading")
		case "stop":
			if readers.done == nil {
				return errors.New("stop without readers")
			}
			readers.stop.Store(true)
			<-readers.done
			if readers.err != nil {
				return readers.err
			}
			var sb strings.Builder
			sb.WriteString("intervals")
			for _, t := range readers.intervals {
				sb.WriteString(" ")
				sb.WriteString(strconv.FormatInt(t, 10))
			}
			say(sb.String())
		default:
			return fmt.Errorf("bad command %q", f)
		}
		return nil
	})
	if held != nil {
		_ = held.Release()
	}
	return err
}

func parseMode(s string) (lockmgr.Mode, error) {
	switch s {
	case "shared":
		return lockmgr.Shared, nil
	case "exclusive":
		return lockmgr.Exclusive, nil
	}
	return 0, fmt.Errorf("bad mode %q", s)
}

func parseAcquire(f []string) (lockmgr.Mode, time.Duration, error) {
	if len(f) != 3 {
		return 0, 0, fmt.Errorf("bad command %q", f)
	}
	mode, err := parseMode(f[1])
	if err != nil {
		return 0, 0, err
	}
	ms, err := strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, err
	}
	return mode, time.Duration(ms) * time.Millisecond, nil
}
