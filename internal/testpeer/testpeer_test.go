package testpeer

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// peer drives one lock peer over its line protocol.
type peer struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Scanner
}

func (p *peer) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, line+"\n"); err != nil {
		p.t.Fatal(err)
	}
}

// expect reads the next answer and checks its first word.
func (p *peer) expect(word string) []string {
	p.t.Helper()
	if !p.out.Scan() {
		p.t.Fatalf("peer ended (%v), want %q", p.out.Err(), word)
	}
	f := strings.Fields(p.out.Text())
	if len(f) == 0 || f[0] != word {
		p.t.Fatalf("peer said %q, want %q", p.out.Text(), word)
	}
	return f
}

// pipes connects a peer: the test writes to in, reads from out.
func pipes(t *testing.T) (peerIn io.Reader, peerOut io.WriteCloser, p *peer) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	return inR, outW, &peer{t: t, in: inW, out: bufio.NewScanner(outR)}
}

func goPeer(t *testing.T, root, scan string) *peer {
	in, out, p := pipes(t)
	done := make(chan error, 1)
	go func() {
		err := ServeLockPeer(root, scan, in, out)
		out.Close()
		done <- err
	}()
	t.Cleanup(func() {
		p.end()
		if err := <-done; err != nil {
			t.Errorf("Go peer: %v", err)
		}
	})
	return p
}

func pythonPeer(t *testing.T, root, scan string) *peer {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 missing")
	}
	in, out, p := pipes(t)
	cmd := exec.Command(python, "plantdb_peer.py", "serve", root, scan)
	cmd.Stdin, cmd.Stdout = in, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.end()
		err := cmd.Wait()
		out.Close()
		if err != nil {
			t.Errorf("Python peer: %v", err)
		}
	})
	return p
}

// end closes the peer's input and reads what it still says (after a
// failed check), so that it can finish.
func (p *peer) end() {
	p.in.Close()
	go func() {
		for p.out.Scan() {
		}
	}()
}

// acquire asks for the scan and expects the answer want (ok, timeout).
func (p *peer) acquire(mode, ms, want string) {
	p.t.Helper()
	p.send("acquire " + mode + " " + ms)
	p.expect("waiting")
	p.expect(want)
}

func (p *peer) release() {
	p.t.Helper()
	p.send("release")
	p.expect("released")
}

// Both peers speak the same protocol and exclude each other on one scan
// root: the driver of the benchmark relies on both.
func TestPeersSpeakOneProtocol(t *testing.T) {
	root := t.TempDir()
	g, py := goPeer(t, root, "s"), pythonPeer(t, root, "s")
	for _, p := range []*peer{g, py} {
		p.expect("ready")
		p.send("loop shared 3")
		p.expect("loop")
		p.send("readers 100")
		p.expect("reading")
		p.send("stop")
		if f := p.expect("intervals"); len(f)%2 != 1 {
			t.Fatalf("odd number of interval ends: %q", f)
		}
	}

	for _, c := range []struct{ holder, other *peer }{{g, py}, {py, g}} {
		c.holder.acquire("exclusive", "10000", "ok")
		// The other side times out while the holder holds.
		c.other.acquire("shared", "300", "timeout")
		c.holder.release()
		c.other.acquire("shared", "10000", "ok")
		c.other.release()
	}
	py.send("quit")
	g.send("quit")
}
