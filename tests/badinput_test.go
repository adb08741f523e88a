package tests

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"scanlockfs/lockmgr"
)

// Bad input: hostile names through the mount and hostile arguments to
// every command. Names behave as in a plain directory and take the locks
// of their scan; arguments get a clear error and the documented exit
// code, and nothing changes on disk.

// treeState is what a tree looks like: per relative path its type,
// permissions, size, modification time (when asked) and content digest.
func treeState(t *testing.T, root string, mtimes bool, skip func(rel string) bool) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skip != nil && skip(rel) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		s := fmt.Sprintf("%v %d", info.Mode(), info.Size())
		if mtimes {
			s += fmt.Sprintf(" %d", info.ModTime().UnixNano())
		}
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" %x", sha256.Sum256(b))
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			s += " -> " + target
		}
		state[rel] = s
		return nil
	})
	must(t, err)
	return state
}

// diffStates describes how two tree states differ ("" if they do not).
func diffStates(a, b map[string]string) string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			out = append(out, fmt.Sprintf("%q: gone (was %s)", k, v))
		} else if w != v {
			out = append(out, fmt.Sprintf("%q: %s, was %s", k, w, v))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%q: new (%s)", k, v))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// pyNames makes the same tree of hostile names under a root (given as
// the first argument) and prints what every operation gave (ok or the
// errno name), one line per operation; names are printed in hex.
// Operations use paths relative to the root, so that the paths passed
// to the kernel have the same length in a plain directory and in the
// mount.
const pyNames = `
import errno, os, sys
os.chdir(sys.argv[1])
out = []
def do(what, f, *args):
    try:
        f(*args)
        out.append(what + " ok")
    except OSError as e:
        out.append(what + " " + errno.errorcode.get(e.errno, str(e.errno)))
def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
def read(path):
    with open(path, "rb") as f:
        f.read()
tops = [b"scan\nnl", b"\xff\xfe", b"s" * 250, b"b" * 255, b"t" * 256, b"-rf", b"sp ace", b"x.lock",
        b"esc\x1b[31m", b".hidden", b"tab\tname", b"back\\slash", b"*", b"..dots"]
files = [b"f\nname", b"\xff", b"c" * 255, b"c" * 256, b"\x01\x02"]
for top in tops:
    h = top.hex()
    do("mkdir " + h, os.mkdir, top)
    for name in files:
        p = os.path.join(top, name)
        do("write %s/%s" % (h, name.hex()), write, p, b"data of " + p)
        do("read %s/%s" % (h, name.hex()), read, p)
    deep = os.path.join(top, *([b"d" * 60] * 40))
    do("makedirs " + h, os.makedirs, deep)
    do("write deep " + h, write, os.path.join(deep, b"leaf\n"), b"deep")
    do("rename " + h, os.rename, os.path.join(top, b"f\nname"), os.path.join(top, b"renamed\xff"))
    do("unlink " + h, os.unlink, os.path.join(top, b"\xff"))
    do("symlink " + h, os.symlink, b"../target\nx", os.path.join(top, b"link\xfe"))
    do("chmod " + h, os.chmod, os.path.join(top, b"c" * 255), 0o600)
    do("rmdir nonempty " + h, os.rmdir, top)
do("write root file", write, b"root\nfile\xff", b"root")
print("\n".join(out))
`

// Names with newlines, invalid UTF-8, control characters, 255-byte
// components (and 256, too long), deep paths: the same operations give
// the same results and the same tree through the mount as in a plain
// directory; scans whose name is a valid scan id got their lock files,
// named after them directly in SOURCE/.locks; other names (hidden,
// 251 bytes and more) none; nothing appeared outside SOURCE.
func TestBadNamesThroughMount(t *testing.T) {
	t.Parallel()
	plain := filepath.Join(t.TempDir(), "plain")
	must(t, os.Mkdir(plain, 0o755))
	src := scanDB(t)
	d := mountT(t, src)
	base := d.leakBaseline(t)
	around := treeState(t, filepath.Dir(src), true, func(rel string) bool { return rel == filepath.Base(src) })

	want := run(t, "python3", "-c", pyNames, plain)
	got := run(t, "python3", "-c", pyNames, d.mnt)
	if got != want {
		t.Fatalf("operations gave other results through the mount:\n--- mount\n%s\n--- plain directory\n%s", got, want)
	}
	if !strings.Contains(want, " ok") || !strings.Contains(want, "ENAMETOOLONG") {
		t.Fatalf("the script did not exercise what it should:\n%s", want)
	}
	noLocks := func(rel string) bool { return rel == lockmgr.LockDirName }
	skipBase := func(rel string) bool { return rel == "romidb" || rel == "users.json" }
	a := treeState(t, plain, false, nil)
	b := treeState(t, src, false, func(rel string) bool { return noLocks(rel) || skipBase(rel) })
	if diff := diffStates(a, b); diff != "" {
		t.Fatalf("SOURCE differs from the plain directory:\n%s", diff)
	}

	// Lock files: exactly one per top-level directory with a valid scan id.
	var wantLocks []string
	for _, e := range names(t, plain) {
		if st, err := os.Stat(filepath.Join(plain, e)); err == nil && st.IsDir() && lockmgr.ValidateScanID(e) == nil {
			wantLocks = append(wantLocks, e+".lock")
		}
	}
	var gotLocks []string
	for _, e := range names(t, d.lockDir()) {
		st, err := os.Lstat(filepath.Join(d.lockDir(), e))
		must(t, err)
		if !st.Mode().IsRegular() {
			t.Fatalf("%q in the lock directory is not a regular file: %v", e, st.Mode())
		}
		if strings.HasSuffix(e, ".lock") {
			gotLocks = append(gotLocks, e)
		}
	}
	slices.Sort(wantLocks)
	slices.Sort(gotLocks)
	if !slices.Equal(gotLocks, wantLocks) {
		t.Fatalf("lock files %q, want %q", gotLocks, wantLocks)
	}
	if diff := diffStates(around, treeState(t, filepath.Dir(src), true, func(rel string) bool { return rel == filepath.Base(src) })); diff != "" {
		t.Fatalf("something changed next to SOURCE:\n%s", diff)
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// While a program holds a file in a scan with a hostile but valid name,
// that scan is held (another process sees it in /proc/locks on its lock
// file); a directory whose name is not a scan id takes no lock.
func TestBadNamesTakeTheirScansLock(t *testing.T) {
	t.Parallel()
	src := scanDB(t)
	for _, s := range []string{"scan\nnl", "\xff\xfe", strings.Repeat("s", 250), "esc\x1b[31m", strings.Repeat("b", 251), ".hidden"} {
		must(t, os.Mkdir(filepath.Join(src, s), 0o755))
		must(t, os.WriteFile(filepath.Join(src, s, "f"), []byte("x"), 0o644))
	}
	d := mountT(t, src)
	base := d.leakBaseline(t)
	for _, s := range []string{"scan\nnl", "\xff\xfe", strings.Repeat("s", 250), "esc\x1b[31m"} {
		p := startPy(t, "holder", nil, "import os, sys; fd = os.open(os.fsencode(sys.argv[1]), os.O_WRONLY); print('held', flush=True); sys.stdin.readline()",
			d.path(s+"/f"))
		p.expect("held")
		if st := lockState(t, src, s); st.State != "exclusive" {
			t.Fatalf("scan %q while a writer holds a file in it: %s", s, st.State)
		}
		p.send("")
		must(t, p.wait())
		waitFree(t, src, s)
	}
	before := names(t, d.lockDir())
	for _, s := range []string{strings.Repeat("b", 251), ".hidden"} {
		p := startPy(t, "holder", nil, "import os, sys; fd = os.open(os.fsencode(sys.argv[1]), os.O_WRONLY); print('held', flush=True); sys.stdin.readline()",
			d.path(s+"/f"))
		p.expect("held")
		if got := names(t, d.lockDir()); !slices.Equal(got, before) {
			t.Fatalf("a file in %q (not a scan) created lock files: %q", s, got)
		}
		p.send("")
		must(t, p.wait())
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// A tree deeper than PATH_MAX can be built through the mount with
// relative operations, as in a plain directory: the daemon reaches the
// backing files from directory descriptors, a piece of the path at a
// time, never through one whole path (go-fuse's loopback answered
// ENAMETOOLONG once SOURCE plus the path passed PATH_MAX). Files at the
// bottom are created, written, stat'ed, read, renamed and removed, the
// same tree is on SOURCE, and the mount goes on serving.
func TestBadNamesBeyondPathMax(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	base := d.leakBaseline(t)
	script := `
import os, stat, sys
os.chdir(sys.argv[1])
comp = b"d" * 100
depth = 0
for i in range(60):
    os.mkdir(comp)
    os.chdir(comp)
    depth += 101
with open("f", "w") as f:
    f.write("deep\n")
st = os.stat("f")
assert stat.S_ISREG(st.st_mode) and st.st_size == 5, st
os.symlink("f", "l")
assert os.readlink("l") == "f"
os.rename("f", "g")
assert open("g").read() == "deep\n"
os.link("g", "h")
assert os.stat("h").st_nlink == 2
os.chmod("g", 0o640)
assert set(os.listdir(".")) == {"g", "h", "l"}, os.listdir(".")
print("depth", depth, oct(os.stat("g").st_mode & 0o777))
`
	out := strings.Fields(run(t, "python3", "-c", script, d.path("scanA")))
	if len(out) != 3 || out[0] != "depth" || out[2] != "0o640" {
		t.Fatalf("deep tree through the mount: %v, want depth and mode 0o640", out)
	}
	if depth := len(d.srcPath("scanA")) + 1 + atoi(t, out[1]); depth <= 4096 {
		t.Fatalf("the tree reaches a backing path of %d bytes only, not beyond PATH_MAX", depth)
	}
	// The same tree is on SOURCE; then remove it through the mount.
	check := `
import os, sys
os.chdir(sys.argv[1])
for i in range(60):
    os.chdir(b"d" * 100)
print(open("g").read().strip(), sorted(os.listdir(".")))
`
	if got := run(t, "python3", "-c", check, d.srcPath("scanA")); got != "deep ['g', 'h', 'l']\n" {
		t.Fatalf("on SOURCE: %q", got)
	}
	remove := `
import os, sys
os.chdir(sys.argv[1])
for i in range(60):
    os.chdir(b"d" * 100)
for n in ("g", "h", "l"):
    os.unlink(n)
for i in range(60):
    os.chdir("..")
    os.rmdir(b"d" * 100)
print(sorted(os.listdir(".")))
`
	if got := run(t, "python3", "-c", remove, d.path("scanA")); got != "['files.json', 'metadata']\n" {
		t.Fatalf("removing the deep tree: %q", got)
	}
	if got := run(t, "cat", d.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("after the deep tree: %q", got)
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}

// Every command with missing, wrong and hostile arguments: the
// documented exit code, a message that names what is wrong, no Go stack
// trace, no raw control character echoed, and nothing changed on disk.
func TestBadCLIArguments(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	src := filepath.Join(base, "db")
	must(t, os.MkdirAll(filepath.Join(src, "scanA"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "scanA", "files.json"), []byte("{}\n"), 0o644))
	file := filepath.Join(base, "file")
	must(t, os.WriteFile(file, []byte("not a directory\n"), 0o644))
	empty := filepath.Join(base, "empty")
	must(t, os.Mkdir(empty, 0o755))
	missing := filepath.Join(base, "missing")
	long := "/tmp/" + strings.Repeat("x", 5000)
	longID := strings.Repeat("a", 300)
	escID := ".\x1b]0;pwned\x07\x1b[2J"

	cases := []struct {
		args []string
		code int
		want string // in standard error
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--frob"}, 2, "frob"},
		{[]string{"help", "frob"}, 2, `"frob"`},
		{[]string{"version", "x"}, 2, "no arguments"},

		{[]string{"mount"}, 2, "SOURCE"},
		{[]string{"mount", src}, 2, "MOUNTPOINT"},
		{[]string{"mount", missing, empty}, 6, missing},
		{[]string{"mount", file, empty}, 2, file},
		{[]string{"mount", base + "/a\nb", empty}, 6, "does not exist"},
		{[]string{"mount", long, empty}, 1, "file name too long"},
		{[]string{"mount", src, long}, 5, "file name too long"},
		{[]string{"mount", src, file}, 5, file},
		{[]string{"mount", src, filepath.Join(src, "scanA", "..", "scanA")}, 2, "inside SOURCE"},
		{[]string{"mount", "--timeout", "-1s", src, empty}, 2, "--timeout"},
		{[]string{"mount", "--timeout", "1e999", src, empty}, 2, "--timeout"},
		{[]string{"mount", "-o", "timeout=abc", src, empty}, 2, "timeout"},
		{[]string{"mount", "-o", "allow_other,=,,x=", src, empty}, 2, "unknown mount option"},

		{[]string{"run", "-x", src, "../x", "--", "true"}, 2, `"../x"`},
		{[]string{"run", "-x", src, "a/b", "--", "true"}, 2, `"a/b"`},
		{[]string{"run", "-x", src, ".hidden", "--", "true"}, 2, `".hidden"`},
		{[]string{"run", "-x", src, "", "--", "true"}, 2, "empty"},
		{[]string{"run", "-x", src, longID, "--", "true"}, 2, "longer than 250 bytes"},
		{[]string{"run", "-x", src, escID, "--", "true"}, 2, `\x1b`},
		{[]string{"run", "-x", missing, "scanA", "--", "true"}, 6, missing},
		{[]string{"run", "-x", file, "scanA", "--", "true"}, 2, file},
		{[]string{"run", "-x", long, "scanA", "--", "true"}, 1, "file name too long"},
		{[]string{"run", "-x", src, "scanA"}, 2, "no COMMAND"},
		{[]string{"run", "-s", "-x", src, "scanA", "--", "true"}, 2, "not both"},
		{[]string{"run", "-x", "-w", "soon", src, "scanA", "--", "true"}, 2, "soon"},
		{[]string{"run", "-x", src, "scanA", "--", "no-such-command-\n-x"}, 127, "not found"},
		{[]string{"run", "-x", src, "scanA", "--", long}, 126, "file name too long"},

		{[]string{"status"}, 2, "SOURCE"},
		{[]string{"status", missing}, 6, missing},
		{[]string{"status", file}, 2, file},
		{[]string{"status", long}, 1, "file name too long"},
		{[]string{"status", src, "../x"}, 2, `"../x"`},
		{[]string{"status", src, "a/b"}, 2, `"a/b"`},
		{[]string{"status", src, ""}, 2, "empty"},
		{[]string{"status", src, longID}, 2, "longer than 250 bytes"},
		{[]string{"status", src, escID}, 2, `\x1b`},

		{[]string{"cleanup"}, 2, "SOURCE"},
		{[]string{"cleanup", src, "extra"}, 2, "exactly one SOURCE"},
		{[]string{"cleanup", missing}, 6, missing},
		{[]string{"cleanup", file}, 2, file},
		{[]string{"cleanup", long}, 1, "file name too long"},

		{[]string{"unmount"}, 2, "MOUNTPOINT"},
		{[]string{"unmount", empty, "extra"}, 2, "exactly one MOUNTPOINT"},
		{[]string{"unmount", missing}, 6, missing},
		{[]string{"unmount", empty}, 6, "nothing is mounted"},
		{[]string{"unmount", file}, 6, "nothing is mounted"},
		{[]string{"unmount", long}, 6, "nothing is mounted"},
	}
	before := treeState(t, base, true, nil)
	for _, c := range cases {
		code, _, stderr := runCode(t, binScanlockfs, c.args...)
		name := fmt.Sprintf("%.120q", strings.Join(c.args, " "))
		if code != c.code {
			t.Errorf("%s: exit %d, want %d; stderr: %.300s", name, code, c.code, stderr)
		}
		if !strings.HasPrefix(stderr, "scanlockfs") || !strings.Contains(stderr, c.want) {
			t.Errorf("%s: stderr lacks %q: %.300s", name, c.want, stderr)
		}
		for _, bad := range []string{"goroutine ", "panic", "\x1b", "\x07"} {
			if strings.Contains(stderr, bad) {
				t.Errorf("%s: stderr has %q: %.300q", name, bad, stderr)
			}
		}
		if diff := diffStates(before, treeState(t, base, true, nil)); diff != "" {
			t.Fatalf("%s changed the disk:\n%s", name, diff)
		}
	}
	if isMounted(empty) {
		t.Fatal("a refused mount mounted something")
	}
}
