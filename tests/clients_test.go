package tests

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/testutil"
)

// client is a running slclient.
type client struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	more  chan struct{}
	done  chan struct{}
}

// startClient starts slclient. Go's asynchronous preemption is off in it:
// its signals would interrupt the FUSE requests it waits in.
func startClient(t *testing.T, name string) *client {
	t.Helper()
	c := &client{t: t, name: name, more: make(chan struct{}, 1), done: make(chan struct{})}
	c.cmd = exec.Command(binClient)
	c.cmd.Env = append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
	var err error
	c.stdin, err = c.cmd.StdinPipe()
	must(t, err)
	stdout, err := c.cmd.StdoutPipe()
	must(t, err)
	c.cmd.Stderr = os.Stderr
	must(t, c.cmd.Start())
	go func() {
		_ = testutil.ReadLines(stdout, func(l string) {
			c.mu.Lock()
			c.lines = append(c.lines, l)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		})
		close(c.done)
	}()
	t.Cleanup(c.stop)
	return c
}

// stop closes the client's input (closing its files) and waits for it.
func (c *client) stop() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		_ = c.cmd.Process.Kill()
	}
	_ = c.cmd.Wait()
}

func (c *client) pid() int { return c.cmd.Process.Pid }

func (c *client) send(format string, args ...any) {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.stdin, format+"\n", args...); err != nil {
		c.t.Fatalf("%s: %v", c.name, err)
	}
}

// reply is one answer of slclient: ok or err, with the time it was taken.
type reply struct {
	kind  string // "start", "ok", "err"
	errno string // for err
	at    int64  // monotonic ns
	data  string // for read
}

// await waits for the next line of kind (start, or a result: ok/err)
// about id.
func (c *client) await(id string, result bool) reply {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for i := 0; ; {
		c.mu.Lock()
		lines := c.lines
		c.mu.Unlock()
		for ; i < len(lines); i++ {
			f := strings.Fields(lines[i])
			if len(f) < 3 || f[1] != id {
				if len(f) > 0 && f[0] == "bad" {
					c.t.Fatalf("%s: %s", c.name, lines[i])
				}
				continue
			}
			if (f[0] == "start") == result {
				continue
			}
			r := reply{kind: f[0]}
			switch {
			case f[0] == "err" && len(f) >= 4:
				r.errno = f[2]
				r.at, _ = strconv.ParseInt(f[3], 10, 64)
			default:
				r.at, _ = strconv.ParseInt(f[2], 10, 64)
				if len(f) > 3 {
					r.data, _ = strconv.Unquote(strings.Join(f[3:], " "))
				}
			}
			c.mu.Lock()
			c.lines = c.lines[i+1:]
			c.mu.Unlock()
			return r
		}
		select {
		case <-c.more:
		case <-c.done:
			c.mu.Lock()
			n := len(c.lines)
			c.mu.Unlock()
			if n == i {
				c.t.Fatalf("%s exited while the test waited for %s", c.name, id)
			}
		case <-deadline:
			c.t.Fatalf("%s: no answer for %s within %v", c.name, id, waitLimit)
		}
	}
}

// open asks the client to open path and returns the time the call
// started; use result to get its outcome.
func (c *client) open(id, path, flags string) int64 {
	c.t.Helper()
	c.send("open %s %s %s", id, path, flags)
	return c.await(id, false).at
}

// result waits for the outcome of id.
func (c *client) result(id string) reply {
	c.t.Helper()
	return c.await(id, true)
}

// mustOpen opens and fails the test unless the open succeeds; it returns
// the time the open returned.
func (c *client) mustOpen(id, path, flags string) int64 {
	c.t.Helper()
	c.open(id, path, flags)
	r := c.result(id)
	if r.kind != "ok" {
		c.t.Fatalf("%s: open %s (%s): %s", c.name, path, flags, r.errno)
	}
	return r.at
}

// close closes id and returns the time just before close(2) was called.
func (c *client) close(id string) int64 {
	c.t.Helper()
	c.send("close %s", id)
	start := c.await(id, false).at
	if r := c.result(id); r.kind != "ok" {
		c.t.Fatalf("%s: close %s: %s", c.name, id, r.errno)
	}
	return start
}

// startWriter starts a client named "writer" that holds path open for
// writing as "w".
func startWriter(t *testing.T, path string) *client {
	t.Helper()
	w := startClient(t, "writer")
	w.mustOpen("w", path, "w")
	return w
}

// twoReaders starts clients named a and b, each with path open for
// reading as "r": two shared holders, as an upgrade deadlock needs.
func twoReaders(t *testing.T, path, a, b string) (*client, *client) {
	t.Helper()
	ca, cb := startClient(t, a), startClient(t, b)
	ca.mustOpen("r", path, "r")
	cb.mustOpen("r", path, "r")
	return ca, cb
}

// checkNoWaiterLeft checks that a non-blocking writer of path gets it at
// once: a queued waiter left behind would be ahead of it (FIFO). after
// says after what, for the failure.
func checkNoWaiterLeft(t *testing.T, path, after string) {
	t.Helper()
	c := startClient(t, "next writer")
	c.open("w", path, "wn")
	if r := c.result("w"); r.kind != "ok" {
		t.Fatalf("non-blocking writer %s: %s (a waiter was left behind?)", after, r.errno)
	}
	c.close("w")
}

// openHolding opens path as id (mustOpen) and checks that scan of src is
// then held in state: "shared" or "exclusive".
func (c *client) openHolding(id, path, flags, src, scan, state string) {
	c.t.Helper()
	c.mustOpen(id, path, flags)
	if st := lockState(c.t, src, scan); st.State != state {
		c.t.Fatalf("%s: %s is %s while %s is open with %s, want %s", c.name, scan, st.State, path, flags, state)
	}
}

// errnoText is the message C programs print for errno e.
func errnoText(e syscall.Errno) string { return e.Error() }
