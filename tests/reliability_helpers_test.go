package tests

import (
	"bufio"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pyProc is a python3 client that talks in lines: the test sends
// commands on its standard input and waits for the lines it prints.
// Python retries EINTR itself (PEP 475), as a careful C program would.
type pyProc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   syncBuffer
	// waitErr is the exit status, valid once done is closed.
	waitErr error
	// early holds results of pyOpener requests that arrived while the
	// test waited for another request's (requests run concurrently).
	early []string
}

// startPy runs python3 -c script args... as the test user (cred nil) or
// as another user.
func startPy(t *testing.T, name string, cred *syscall.Credential, script string, args ...string) *pyProc {
	t.Helper()
	return startPython(t, name, cred, append([]string{"-c", script}, args...)...)
}

// startPython runs python3 -u pyArgs...
func startPython(t *testing.T, name string, cred *syscall.Credential, pyArgs ...string) *pyProc {
	t.Helper()
	py := "python3"
	if cred != nil {
		// The pyenv shim in root's PATH is not usable by other users.
		py = "/usr/bin/python3"
	}
	cmd := exec.Command(py, append([]string{"-u"}, pyArgs...)...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	return startLineProc(t, name, cmd)
}

// startLineProc starts cmd, a program that talks in lines like pyProc
// (any program, despite the type's name).
func startLineProc(t *testing.T, name string, cmd *exec.Cmd) *pyProc {
	t.Helper()
	p := &pyProc{t: t, name: name, cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	var err error
	p.stdin, err = p.cmd.StdinPipe()
	must(t, err)
	out, err := p.cmd.StdoutPipe()
	must(t, err)
	p.cmd.Stderr = &p.err
	must(t, p.cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pyProc) pid() int { return p.cmd.Process.Pid }

func (p *pyProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// expect waits for the next line that starts with word and returns its
// fields.
func (p *pyProc) expect(word string) []string {
	p.t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case l := <-p.lines:
			f := strings.Fields(l)
			if len(f) > 0 && f[0] == word {
				return f
			}
			p.t.Logf("%s: %s", p.name, l)
		case <-p.done:
			// Lines printed just before exiting are still in the channel.
			select {
			case l := <-p.lines:
				if f := strings.Fields(l); len(f) > 0 && f[0] == word {
					return f
				}
			default:
			}
			p.t.Fatalf("%s exited (%v) while the test waited for %q; stderr: %s", p.name, p.waitErr, word, p.err.String())
		case <-deadline:
			p.t.Fatalf("%s: no %q within %v; stderr: %s", p.name, word, waitLimit, p.err.String())
		}
	}
}

// wait waits for the client to exit and returns its exit error.
func (p *pyProc) wait() error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(waitLimit):
		p.t.Fatalf("%s did not exit", p.name)
		return nil
	}
}

// pyOpener is a python3 program that opens files on command and reports
// the outcome with errno names and CLOCK_MONOTONIC time stamps:
//
//	open ID PATH FLAGS -> opened ID T | failed ID ERRNO T
//	close ID           -> closed ID T (T just before close)
//	write ID TEXT      -> wrote ID T | failed ID ERRNO T
//	read ID            -> read ID T LEN
//
// FLAGS as in slclient: r w b (access), t a c n (O_TRUNC, O_APPEND,
// O_CREAT, O_NONBLOCK). Each open runs in its own thread, so that a
// process can close one file while another of its opens waits.
const pyOpener = `
import errno, os, sys, threading, time
fds = {}
lock = threading.Lock()
def say(*w):
    with lock:
        print(*w, flush=True)
def flags(s):
    f = {'r': os.O_RDONLY, 'w': os.O_WRONLY, 'b': os.O_RDWR}[s[0]]
    for c in s[1:]:
        f |= {'t': os.O_TRUNC, 'a': os.O_APPEND, 'c': os.O_CREAT, 'n': os.O_NONBLOCK}[c]
    return f
def do_open(i, path, fl):
    try:
        fd = os.open(path, flags(fl), 0o644)
    except OSError as e:
        say('failed', i, errno.errorcode.get(e.errno, str(e.errno)), time.monotonic_ns())
        return
    fds[i] = fd
    say('opened', i, time.monotonic_ns())
for line in sys.stdin:
    w = line.split()
    if not w:
        continue
    if w[0] == 'open':
        threading.Thread(target=do_open, args=(w[1], w[2], w[3])).start()
    elif w[0] == 'close':
        t = time.monotonic_ns()
        try:
            os.close(fds.pop(w[1]))
            say('closed', w[1], t)
        except OSError as e:
            say('failed', w[1], errno.errorcode.get(e.errno, str(e.errno)), time.monotonic_ns())
    elif w[0] == 'write':
        try:
            os.write(fds[w[1]], ' '.join(w[2:]).encode())
            say('wrote', w[1], time.monotonic_ns())
        except OSError as e:
            say('failed', w[1], errno.errorcode.get(e.errno, str(e.errno)), time.monotonic_ns())
    elif w[0] == 'read':
        try:
            n = len(os.pread(fds[w[1]], 1 << 16, 0))
            say('read', w[1], time.monotonic_ns(), n)
        except OSError as e:
            say('failed', w[1], errno.errorcode.get(e.errno, str(e.errno)), time.monotonic_ns())
`

// result waits for the outcome of request id of a pyOpener: "opened" or
// the errno name, and its time.
func (p *pyProc) result(id string) (string, int64) {
	p.t.Helper()
	for i, l := range p.early {
		if r, at, ok := p.parseResult(l, id); ok {
			p.early = append(p.early[:i], p.early[i+1:]...)
			return r, at
		}
	}
	deadline := time.After(waitLimit)
	for {
		select {
		case l := <-p.lines:
			if r, at, ok := p.parseResult(l, id); ok {
				return r, at
			}
			if f := strings.Fields(l); len(f) >= 3 && (f[0] == "failed" || resultWords[f[0]]) {
				p.early = append(p.early, l) // another request's: keep it for its result call
			}
			p.t.Logf("%s: %s", p.name, l)
		case <-p.done:
			p.t.Fatalf("%s exited (%v) while the test waited for %s; stderr: %s", p.name, p.waitErr, id, p.err.String())
		case <-deadline:
			p.t.Fatalf("%s: no result for %s within %v; stderr: %s", p.name, id, waitLimit, p.err.String())
		}
	}
}

var resultWords = map[string]bool{"opened": true, "closed": true, "wrote": true, "read": true}

// parseResult reads l as the outcome of request id of a pyOpener.
func (p *pyProc) parseResult(l, id string) (string, int64, bool) {
	f := strings.Fields(l)
	switch {
	case len(f) >= 3 && f[1] == id && resultWords[f[0]]:
		return f[0], stamp(p.t, f[2]), true
	case len(f) == 4 && f[0] == "failed" && f[1] == id:
		return f[2], stamp(p.t, f[3]), true
	}
	return "", 0, false
}

// firstWithResult waits until a or b has the outcome of request id and
// returns that one, leaving the outcome for its result call.
func firstWithResult(t *testing.T, id string, a, b *pyProc) *pyProc {
	t.Helper()
	ps := [2]*pyProc{a, b}
	deadline := time.After(waitLimit)
	for {
		for _, p := range ps {
			for _, l := range p.early {
				if _, _, ok := p.parseResult(l, id); ok {
					return p
				}
			}
		}
		select {
		case l := <-ps[0].lines:
			ps[0].early = append(ps[0].early, l)
		case l := <-ps[1].lines:
			ps[1].early = append(ps[1].early, l)
		case <-deadline:
			t.Fatalf("no result for %s within %v", id, waitLimit)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
