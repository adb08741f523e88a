package tests

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The crash matrix, part 1: clients and direct lock users killed with
// SIGKILL. Whatever they held or waited for is given back: the next
// process gets the scan, and the daemon ends with no lease, no waiter and
// its descriptors back to the baseline. Daemon crashes are in
// crash_daemon_test.go.

// kill sends SIGKILL to p and returns the time just before.
func kill(t *testing.T, p *os.Process) int64 {
	t.Helper()
	at := now()
	must(t, p.Kill())
	return at
}

// A client killed while it holds a read or a write handle frees the
// scan: the opener queued behind it is granted only after the kill, and
// a writer's data is on SOURCE for it.
func TestCrashClientKilledHolding(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		holds, queued string // slclient open flags
		left          string // what the queued opener reads ("" for the original)
	}{
		{"read handle", "r", "w", ""},
		{"write handle", "w", "r", "written before the crash"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
			base := d.leakBaseline(t)
			f := d.path("scanA/files.json")
			holder := startClient(t, "holder")
			holder.mustOpen("h", f, c.holds)
			if c.left != "" {
				holder.send("write h " + c.left)
				if r := holder.result("h"); r.kind != "ok" {
					t.Fatalf("write: %s", r.errno)
				}
			}
			d.queueThenKill(t, f, c.queued, holder.cmd.Process, c.left)
			d.checkNoLeaks(t, base)
			d.stopNoLeaks(t)
		})
	}
}

// queueThenKill has a new client open f with flags while victim holds
// its scan, kills victim once the open waits in the lock manager, and
// checks that the open was granted only after the kill and, unless want
// is "", that the file then reads want. It closes the file again and
// waits until scanA (the scan of f in these tests) is free.
func (d *daemon) queueThenKill(t *testing.T, f, flags string, victim *os.Process, want string) {
	t.Helper()
	next := startClient(t, "next")
	next.open("q", f, flags)
	d.waitQueued(t, next.pid())
	killed := kill(t, victim)
	r := next.result("q")
	if r.kind != "ok" || r.at < killed {
		t.Fatalf("queued open: %+v, holder killed at %d: want it granted after the kill", r, killed)
	}
	if want != "" {
		next.send("read q")
		if r := next.result("q"); r.data != want {
			t.Fatalf("after the holder's crash the file holds %q, want %q", r.data, want)
		}
	}
	next.close("q")
	waitFree(t, d.src, "scanA")
}

// A client killed while it waits for a scan does not stay in the kernel
// until the scan is free (the FUSE request is interrupted and the daemon
// answers it at once), and leaves no waiter behind: once the holder
// closes, a non-blocking open gets the scan, and the daemon counted one
// cancelled request.
func TestCrashClientKilledWhileWaiting(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	base := d.leakBaseline(t)
	f := d.path("scanA/files.json")
	holder := startClient(t, "holder")
	holder.mustOpen("h", f, "w")
	for _, flags := range []string{"r", "w"} {
		waiter := startClient(t, "waiter "+flags)
		waiter.open("q", f, flags)
		d.waitQueued(t, waiter.pid())
		kill(t, waiter.cmd.Process)
		select {
		case <-waiter.done:
		case <-time.After(waitLimit):
			t.Fatalf("a waiter (%s) killed with SIGKILL is still there while the scan is held", flags)
		}
		_ = waiter.cmd.Wait()
	}
	// The holder still holds the scan: the waiters went while it did.
	if st := lockState(t, d.src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scan %s while the holder still has it", st.State)
	}
	holder.close("h")
	waitFree(t, d.src, "scanA")
	checkNoWaiterLeft(t, f, "after the killed waiters")
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
	if !strings.Contains(d.stderr.String(), "cancelled=2") {
		t.Errorf("the daemon did not count the two killed waiters as cancelled:\n%s", lastLine(d.stderr.String()))
	}
}

// pyMmap maps a file (read-only for shared, read-write for exclusive),
// writes through the map for exclusive, closes its descriptor and keeps
// the map: the open file lives on in the mapping, and with it the lock.
const pyMmap = `
import mmap, os, sys, time
path, mode = sys.argv[1], sys.argv[2]
if mode == 'w':
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:6] = b'MAPPED'
else:
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ)
    assert m[0:5] == b'files'
os.close(fd)
print('mapped', time.monotonic_ns(), flush=True)
sys.stdin.readline()
`

// A client killed while it maps a file (its descriptor already closed)
// held the scan until the kill, and frees it with the kill; what it
// wrote through the map is in the file for the next holder.
func TestCrashClientKilledWhileMmapped(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, mode, state, queued string
		left                      string // what the queued opener reads ("" for the original)
	}{
		{"read map", "r", "shared", "w", ""},
		{"write map", "w", "exclusive", "r", "MAPPEDof scanA\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
			base := d.leakBaseline(t)
			f := d.path("scanA/files.json")
			p := startPy(t, "mapper", nil, pyMmap, f, c.mode)
			p.expect("mapped")
			if st := lockState(t, d.src, "scanA"); st.State != c.state {
				t.Fatalf("scan %s while a %s is mapped and its descriptor closed, want %s", st.State, c.name, c.state)
			}
			d.queueThenKill(t, f, c.queued, p.cmd.Process, c.left)
			d.checkNoLeaks(t, base)
			d.stopNoLeaks(t)
		})
	}
}

// A process that holds a scan directly on SOURCE (lockmgr, or plantdb's
// protocol) and is killed frees the scan for the mount; the .info file
// it leaves names a dead process and does not stop anybody.
func TestCrashDirectUserKilledWhileHolding(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name string }{{"lockmgr"}, {"plantdb"}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
			base := d.leakBaseline(t)
			var victim *os.Process
			switch c.name {
			case "lockmgr":
				direct := startClient(t, "direct")
				direct.send("lock L %s scanA exclusive", d.src)
				if r := direct.result("L"); r.kind != "ok" {
					t.Fatalf("direct lock: %s", r.errno)
				}
				victim = direct.cmd.Process
			case "plantdb":
				peer := startPython(t, "plantdb", nil, plantdbPeer(t), "hold", d.src, "scanA", "--mode", "exclusive")
				peer.expect("granted")
				victim = peer.cmd.Process
			}
			// The holder has written its .info by now (it keeps the lock).
			waitInfo(t, d.srcPath(".locks/scanA.info"), victim.Pid)
			cat := startProgram(t, "cat", d.path("scanA/files.json"))
			waitBlockedInOpen(t, cat.cmd.Process.Pid)
			killed := kill(t, victim)
			if got := cat.wait(t); got != "files of scanA\n" {
				t.Fatalf("cat after the direct holder's crash: %q", got)
			}
			if cat.end < killed {
				t.Fatal("cat finished before the holder was killed")
			}
			// A writer through the mount gets the scan too, with the dead
			// holder's .info still there or not.
			w := startClient(t, "writer")
			w.mustOpen("w", d.path("scanA/files.json"), "wn")
			w.close("w")
			code, out, _ := runCode(t, binScanlockfs, "status", d.src, "scanA")
			if code != 0 || !strings.Contains(out, "free") {
				t.Fatalf("status after the crash: exit %d\n%s", code, out)
			}
			d.checkNoLeaks(t, base)
			d.stopNoLeaks(t)
		})
	}
}

// waitInfo waits until the .info file at path names pid.
func waitInfo(t *testing.T, path string, pid int) {
	t.Helper()
	want := `"pid": ` + itoa(pid)
	want2 := `"pid":` + itoa(pid)
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) || strings.Contains(string(b), want2) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never named process %d: %q", path, pid, b)
		}
	}
}
