package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The open path: a check that runs only before a wait, and what an open
// file's descriptor answers.

// An open through a cached name of a file removed on SOURCE fails with
// ENOENT at once, as the lookup would have, also while another process
// holds the scan: the check runs before the open would wait. With it
// skipped, the open would wait for the holder until --timeout (EBUSY).
func TestOpenOfFileRemovedOnSourceWhileHeldFailsAtOnce(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--timeout", "10s", "--entry-timeout", "1h", "--attr-timeout", "1h")
	f := filepath.Join("scanA", "gone")
	must(t, os.WriteFile(d.srcPath(f), []byte("x"), 0o644))
	run(t, "cat", d.path(f)) // the kernel caches the name
	// The holder is a peer on SOURCE, not the test process: the opener,
	// a child of the test, would act under its parent's lock.
	p := startPython(t, "plantdb peer", nil, plantdbPeer(t), "serve", src, "scanA")
	p.expect("ready")
	p.send("acquire exclusive 60000")
	p.expect("ok")
	defer func() {
		p.send("release")
		p.expect("released")
	}()
	must(t, os.Remove(d.srcPath(f)))
	got := strings.TrimSpace(run(t, "python3", "-c", coherenceReader, d.path(f)))
	if got != "ENOENT" {
		t.Errorf("open of a file removed on SOURCE while the scan is held: %s, want ENOENT", got)
	}
}

// xattrOfFD opens a file, waits for a line, then prints the value of
// user.x read through the descriptor (fgetxattr), or the errno name.
const xattrOfFD = `
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open")
sys.stdin.readline()
try:
    print("value", os.getxattr(fd, "user.x").decode())
except OSError as e:
    print("value", errno.errorcode[e.errno])
`

// The xattrs read through an open file are that file's, also once its
// name was given to another file on SOURCE: the kernel asks about the
// open inode (as before every write, for security.capability), and the
// daemon answers through the open file's descriptor, not by path.
func TestXattrOfOpenFileIsItsOwn(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	f := d.srcPath("scanA/x")
	must(t, os.WriteFile(f, []byte("old"), 0o644))
	if err := unix.Setxattr(f, "user.x", []byte("old"), 0); err != nil {
		t.Skipf("SOURCE has no user xattrs: %v", err)
	}
	p := startPy(t, "xattr reader", nil, xattrOfFD, d.path("scanA/x"))
	p.expect("open")
	must(t, os.Rename(f, d.srcPath("scanA/x.moved")))
	must(t, os.WriteFile(f, []byte("new"), 0o644))
	must(t, unix.Setxattr(f, "user.x", []byte("new"), 0))
	p.send("")
	if got := p.expect("value"); got[1] != "old" {
		t.Errorf("xattr of the open file after its name was replaced on SOURCE: %s, want old", got[1])
	}
}
