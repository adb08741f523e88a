package lockmgr

// The test side of helper processes: start them, send commands, read
// answers with a deadline.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
)

// proc is a helper process (the test binary or the Python peer) driven
// through its stdin and stdout.
type proc struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	in    *os.File
	lines chan string
	pid   int
	done  chan struct{}
	err   error // exit status, valid after done is closed
}

// startHelper starts the test binary as a helper on root with opts (see
// parseOpts) and waits until its Manager is open.
func startHelper(t testing.TB, root, opts string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperRootEnv+"="+root, helperOptsEnv+"="+opts,
		// Under -race a process sleeps 1 s at exit by default.
		"GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	p := startProc(t, "helper", cmd)
	if line := p.recv(); !strings.HasPrefix(line, "ready ") {
		t.Fatalf("helper did not start: %q", line)
	}
	return p
}

const peerScript = "../internal/testpeer/plantdb_peer.py"

// startPeer starts the Python plantdb peer with args.
func startPeer(t testing.TB, args ...string) *proc {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required for the plantdb peer tests: %v", err)
	}
	return startProc(t, "peer", exec.Command(python, append([]string{peerScript}, args...)...))
}

func startProc(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = stdin
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	p := &proc{t: t, name: name, cmd: cmd, in: w, lines: make(chan string, 1024), pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = testutil.ReadLines(stdout, func(l string) { p.lines <- l })
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop closes the process's stdin and waits for it, killing it if it
// does not exit.
func (p *proc) stop() {
	p.in.Close()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) send(format string, a ...any) {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.in, format+"\n", a...); err != nil {
		p.t.Fatalf("%s %d: %v", p.name, p.pid, err)
	}
}

// recv returns the next line, failing the test after 30 s.
func (p *proc) recv() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("%s %d exited: %v", p.name, p.pid, p.err)
		}
		return l
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s %d: no answer within 30 s", p.name, p.pid)
	}
	return ""
}

// do sends a command and returns its answer.
func (p *proc) do(format string, a ...any) string {
	p.t.Helper()
	p.send(format, a...)
	return p.recv()
}

// ok sends a command that must succeed and returns the answer's fields
// after "ok".
func (p *proc) ok(format string, a ...any) []string {
	p.t.Helper()
	line := p.do(format, a...)
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "ok" {
		p.t.Fatalf("%s %d: %q: got %q", p.name, p.pid, fmt.Sprintf(format, a...), line)
	}
	return f[1:]
}

// okJSON sends a command answered by "ok JSON" and decodes the JSON.
func (p *proc) okJSON(v any, format string, a ...any) {
	p.t.Helper()
	line := p.do(format, a...)
	rest, ok := strings.CutPrefix(line, "ok ")
	if !ok {
		p.t.Fatalf("%s: %q: got %q", p.name, fmt.Sprintf(format, a...), line)
	}
	if err := json.Unmarshal([]byte(rest), v); err != nil {
		p.t.Fatalf("%s: decoding %q: %v", p.name, rest, err)
	}
}

// errKind sends a command that must fail and returns the error kind.
func (p *proc) fails(format string, a ...any) string {
	p.t.Helper()
	line := p.do(format, a...)
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "err" {
		p.t.Fatalf("%s %d: %q should fail, got %q", p.name, p.pid, fmt.Sprintf(format, a...), line)
	}
	return f[1]
}

// atoi64 reads a number the helper printed.
var atoi64 = testutil.MustInt64
