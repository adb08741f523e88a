package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"scanlockfs/internal/testutil"
)

// helperEnv selects a helper mode when this binary is re-executed as a
// client or lock peer process.
const helperEnv = "SCANLOCKFS_BENCH_HELPER"

// proc is a child process driven by lines on stdin and stdout.
type proc struct {
	name   string
	daemon bool
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	done   chan struct{} // closed when the process has exited
	err    error         // exit status, valid after done
	tail   *tailBuffer
}

// procs tracks every child so that cleanup can kill those still running,
// also when the run is interrupted.
type procs struct {
	mu   sync.Mutex
	live map[*proc]struct{}
}

// start runs argv. Its stderr goes to a tail kept for error messages and
// to stderr if not nil. A mount daemon gets SIGTERM if the bench dies (so
// that it unmounts cleanly) and is left alone by killAll (cleanup
// unmounts it); a client gets SIGKILL.
func (ps *procs) start(name string, argv, env []string, stderr io.Writer, daemon bool) (*proc, error) {
	deathSig := syscall.SIGKILL
	if daemon {
		deathSig = syscall.SIGTERM
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// A binary built with -race sleeps a second at exit unless told not
	// to (the smoke test builds everything with -race).
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Env = append(os.Environ(), env...)
	// Own process group: a Ctrl-C in the terminal reaches only the bench,
	// which then stops clients and unmounts in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, daemon: daemon, cmd: cmd, stdin: stdin, lines: make(chan string, 256), done: make(chan struct{}), tail: &tailBuffer{}}
	cmd.Stderr = p.tail
	if stderr != nil {
		cmd.Stderr = io.MultiWriter(p.tail, stderr)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ps.mu.Lock()
	if ps.live == nil {
		ps.live = map[*proc]struct{}{}
	}
	ps.live[p] = struct{}{}
	ps.mu.Unlock()
	go func() {
		_ = testutil.ReadLines(stdout, func(l string) { p.lines <- l })
		close(p.lines)
		p.err = cmd.Wait()
		ps.mu.Lock()
		delete(ps.live, p)
		ps.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// killAll kills every client still running (and the daemons too if
// daemons is true) and waits a little for them.
func (ps *procs) killAll(daemons bool) {
	ps.mu.Lock()
	var all []*proc
	for p := range ps.live {
		if daemons || !p.daemon {
			all = append(all, p)
		}
	}
	ps.mu.Unlock()
	for _, p := range all {
		p.kill()
	}
	for _, p := range all {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) send(format string, args ...any) error {
	_, err := fmt.Fprintf(p.stdin, format+"\n", args...)
	if err != nil {
		return fmt.Errorf("%s: %w%s", p.name, err, p.tail.suffix())
	}
	return nil
}

// expect reads the next line, which must start with one of the words;
// it returns the line's fields.
func (p *proc) expect(ctx context.Context, timeout time.Duration, words ...string) ([]string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			<-p.done
			return nil, fmt.Errorf("%s exited (%v)%s", p.name, p.err, p.tail.suffix())
		}
		f := strings.Fields(line)
		for _, w := range words {
			if len(f) > 0 && f[0] == w {
				return f, nil
			}
		}
		return nil, fmt.Errorf("%s said %q, want %s%s", p.name, line, strings.Join(words, " or "), p.tail.suffix())
	case <-t.C:
		return nil, fmt.Errorf("%s: no answer within %v (want %s)%s", p.name, timeout, strings.Join(words, " or "), p.tail.suffix())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// finish closes stdin (helpers exit on EOF) and waits; it kills the
// process if it does not exit within timeout.
func (p *proc) finish(timeout time.Duration) error {
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v; killed%s", p.name, timeout, p.tail.suffix())
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		return p.err
	}
	if p.err != nil {
		return fmt.Errorf("%s: %v%s", p.name, p.err, p.tail.suffix())
	}
	return nil
}

// tailBuffer keeps the last few KiB of a child's stderr for error
// messages.
type tailBuffer struct{ testutil.Tail }

func (t *tailBuffer) suffix() string {
	if s := t.String(); s != "" {
		return "; stderr: " + s
	}
	return ""
}

// monoNow is CLOCK_MONOTONIC in nanoseconds: comparable across processes
// (Go's time.Now carries a per-process monotonic offset), and what
// Python's time.monotonic_ns returns on Linux.
var monoNow = testutil.Now
