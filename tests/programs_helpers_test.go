package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"
)

// program is a real program run as a client of the mount.
type program struct {
	cmd      *exec.Cmd
	out, err syncBuffer
	done     chan struct{}
	waitErr  error
	end      int64 // monotonic time it was seen to exit
}

func startProgram(t *testing.T, name string, args ...string) *program {
	t.Helper()
	p := newProgram(name, args...)
	p.start(t)
	return p
}

// newProgram prepares a program for start, which runs it.
func newProgram(name string, args ...string) *program {
	p := &program{done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	// For slclient: Go's preemption signals would interrupt its FUSE calls.
	p.cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	return p
}

// start starts the program; the test's cleanup kills it if it still runs.
func (p *program) start(t *testing.T) {
	t.Helper()
	must(t, p.cmd.Start())
	go func() {
		p.waitErr = p.cmd.Wait()
		p.end = now()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// wait waits for the program and fails the test if it failed.
func (p *program) wait(t *testing.T) string {
	t.Helper()
	return p.waitWithin(t, waitLimit)
}

// waitWithin is wait for a program whose work takes long, allowing it
// limit to finish.
func (p *program) waitWithin(t *testing.T, limit time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("%v did not finish within %v", p.cmd.Args, limit)
	}
	if p.waitErr != nil {
		t.Fatalf("%v: %v\nstderr: %s", p.cmd.Args, p.waitErr, p.err.String())
	}
	return p.out.String()
}

// running reports whether the program has not exited yet.
func (p *program) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// execute runs a program to completion with a deadline.
func execute(name string, args ...string) (stdout, stderr string, elapsed time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err = cmd.Run()
	return o.String(), e.String(), time.Since(start), err
}

// run runs a program to completion with a deadline and returns its
// output; it fails the test if the program fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, stderr, _, err := execute(name, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\nstderr: %s", name, args, err, stderr)
	}
	return out
}

// runErr runs a program that is expected to fail and returns its exit
// code, standard error and how long it ran.
func runErr(t *testing.T, name string, args ...string) (int, string, time.Duration) {
	t.Helper()
	_, stderr, elapsed, err := execute(name, args...)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s %q: want a failure, got %v", name, args, err)
	}
	return ee.ExitCode(), stderr, elapsed
}

// runCode runs a program to completion and returns its exit code, stdout
// and stderr; it fails the test only if the program could not run.
func runCode(t *testing.T, name string, args ...string) (int, string, string) {
	t.Helper()
	stdout, stderr, _, err := execute(name, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout, stderr
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode(), stdout, stderr
	}
	t.Fatalf("%s %q: %v\nstderr: %s", name, args, err, stderr)
	return 0, "", ""
}
