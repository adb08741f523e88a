package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testpeer"
)

// Helper modes: this binary re-executed as a client or lock peer, driven
// by lines on stdin and answering on stdout. Timestamps are
// CLOCK_MONOTONIC nanoseconds, comparable across processes.
const (
	helperReader   = "reader"   // 6: "read DIR N" -> "done START END BYTES"
	helperHolder   = "holder"   // 8, 9: "open r|w PATH", "openlist r|w FILE", "close"
	helperLockPeer = "lockpeer" // 7: the lock peer protocol of internal/testpeer (ServeLockPeer, plantdb_peer.py serve)
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
		if len(args) != 2 {
			err = errors.New("usage: lockpeer ROOT SCAN")
			break
		}
		err = testpeer.ServeLockPeer(args[0], args[1], os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// readerHelper reads whole files for workload 6.
func readerHelper() error {
	buf := make([]byte, 64<<10)
	fmt.Println("ready")
	return testpeer.Serve(os.Stdin, func(f []string) error {
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
	return testpeer.Serve(os.Stdin, func(f []string) error {
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
