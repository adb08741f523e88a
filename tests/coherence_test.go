package tests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"scanlockfs/lockmgr"
)

// The coherence contract with the kernel's caches on (README,
// "Coherence"): a program that opens a file after a writer outside the
// mount released the scan's lock sees the writer's data, the size from
// fstat and from stat after the open at once, whatever the kernel cached
// before. Each rule runs for the three kinds of writers on SOURCE: a Go
// process with lockmgr, `scanlockfs run`, and the plantdb-protocol Python
// peer; with the default timeouts, and with timeouts of an hour, which
// leave the kernel's caches nothing to expire on their own in the test.

// coherenceReader opens the file, fstats it, stats its path, reads it
// whole, and prints [data, fstat size, stat size] as JSON, or the errno
// name when the open fails. (The sizes come before the read: the kernel
// asks the daemon for attributes again after a read anyway, to update
// the access time, which would hide a stale size.) It stats the path
// once more at the end, so that the kernel caches everything again.
const coherenceReader = `
import errno, json, os, sys
p = sys.argv[1]
try:
    fd = os.open(p, os.O_RDONLY)
except OSError as e:
    print(errno.errorcode[e.errno]); sys.exit(0)
fsize = os.fstat(fd).st_size
ssize = os.stat(p).st_size
data = b""
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    data += b
os.close(fd)
os.stat(p)
print(json.dumps([data.decode(), fsize, ssize], separators=(",", ":")))
`

// coherenceChange makes one change of a rule to SOURCE's file.
const coherenceChange = `
import os, sys
rule, p = sys.argv[1], sys.argv[2]
if rule == "grew":
    with open(p, "a") as f: f.write("more data\n")
elif rule == "shrank":
    os.truncate(p, 3)
elif rule == "rewritten":
    with open(p, "r+") as f: f.write("XYZ")
elif rule == "renamed":
    with open(p + ".new", "w") as f: f.write("replacement\n")
    os.rename(p + ".new", p)
elif rule == "deleted":
    os.unlink(p)
elif rule == "created":
    with open(p, "w") as f: f.write("created\n")
`

var coherenceRules = []struct {
	rule   string
	exists bool   // the file exists before the change
	want   string // its content after, "" if it is gone
}{
	{"grew", true, "original\nmore data\n"},
	{"shrank", true, "ori"},
	{"rewritten", true, "XYZginal\n"},
	{"renamed", true, "replacement\n"},
	{"deleted", true, ""},
	{"created", false, "created\n"},
}

// readerSees is what coherenceReader prints for content want ("" for a
// missing file).
func readerSees(want string) string {
	if want == "" {
		return "ENOENT"
	}
	b, _ := json.Marshal([]any{want, len(want), len(want)})
	return string(b)
}

// outsideWriter is a kind of writer on SOURCE, outside the mount.
type outsideWriter struct {
	name string
	// locked runs change while the writer holds scan exclusively on src;
	// nil for `scanlockfs run`, whose command makes the change.
	locked func(t *testing.T, src, scan string, change func())
}

// outsideWriters are the writers the coherence tests run: a Go process
// with lockmgr, `scanlockfs run`, and the plantdb-protocol Python peer.
var outsideWriters = []outsideWriter{
	{"lockmgr", func(t *testing.T, src, scan string, change func()) {
		m, err := lockmgr.New(src)
		must(t, err)
		defer m.Close()
		l, err := m.Acquire(context.Background(), scan, lockmgr.Exclusive, lockmgr.ProcessOwner())
		must(t, err)
		change()
		must(t, l.Release())
	}},
	{"scanlockfs run", nil}, // the change runs as the command
	{"plantdb peer", func(t *testing.T, src, scan string, change func()) {
		p := startPython(t, "plantdb peer", nil, plantdbPeer(t), "serve", src, scan)
		p.expect("ready")
		p.send("acquire exclusive 60000")
		p.expect("ok")
		change()
		p.send("release")
		p.expect("released")
	}},
}

// change runs the command argv (a separate process changing src) as w
// would, holding scan.
func (w outsideWriter) change(t *testing.T, src, scan string, argv ...string) {
	t.Helper()
	if w.locked == nil {
		run(t, binScanlockfs, append([]string{"run", "--exclusive", src, scan, "--"}, argv...)...)
		return
	}
	w.locked(t, src, scan, func() { run(t, argv[0], argv[1:]...) })
}

func TestCoherenceWritersOutsideTheMount(t *testing.T) {
	const scan = "scanC"
	for _, timeouts := range []struct {
		name  string
		flags []string
	}{
		{"default timeouts", nil},
		{"one-hour timeouts", []string{"--entry-timeout", "1h", "--attr-timeout", "1h"}},
	} {
		for _, w := range outsideWriters {
			t.Run(timeouts.name+"/"+w.name, func(t *testing.T) {
				t.Parallel()
				src := scanDB(t, scan)
				d := mountT(t, src, timeouts.flags...)
				for _, r := range coherenceRules {
					name := "f-" + r.rule
					srcFile := filepath.Join(src, scan, name)
					if r.exists {
						must(t, os.WriteFile(srcFile, []byte("original\n"), 0o644))
					}
					mntFile := d.path(filepath.Join(scan, name))
					before := "original\n"
					if !r.exists {
						before = ""
					}
					// What the kernel caches now: the name (or its
					// absence), the attributes, the data.
					if got := strings.TrimSpace(run(t, "python3", "-c", coherenceReader, mntFile)); got != readerSees(before) {
						t.Fatalf("%s before the change: read %s, want %s", r.rule, got, readerSees(before))
					}
					w.change(t, src, scan, "python3", "-c", coherenceChange, r.rule, srcFile)
					if got := strings.TrimSpace(run(t, "python3", "-c", coherenceReader, mntFile)); got != readerSees(r.want) {
						t.Errorf("%s by %s, then an open through the mount: read %s, want %s", r.rule, w.name, got, readerSees(r.want))
					}
				}
				// At least the grown and the shrunk file were found
				// changed at their open.
				if n := metricValue(t, d.metrics(t), "scanlockfs_cache_invalidations_total"); n < 2 {
					t.Errorf("%v kernel cache invalidations, want 2 or more", n)
				}
			})
		}
	}
}

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
