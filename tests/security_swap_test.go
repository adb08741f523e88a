package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"scanlockfs/scanstatus"
)

// The symlink-swap race of a shared mount, made deterministic: a user
// who may write its scan directory starts an operation through the
// mount while a root process holds the scan, so that the operation waits
// for the lock (proven from the status view); meanwhile the file or
// directory it names is replaced on SOURCE by a symlink to a root file
// outside, or by a root file. When the scan is released the daemon must
// act on nothing but what the kernel checked: the root files stay as
// they were, and the user reads nothing of them. Before the fix the
// daemon (root) followed the new path.

// swapEnv is a mount with --allow-other, a scan scanU owned by the other
// user, and root-only files outside SOURCE.
type swapEnv struct {
	d       *daemon
	cred    *syscall.Credential
	outside string // root 0700 directory outside SOURCE
	secret  string // root 0600 file in it
}

const secretText = "root secret\n"

func newSwapEnv(t *testing.T, cred *syscall.Credential) *swapEnv {
	t.Helper()
	d := mountT(t, scanDB(t, "scanU"), "--allow-other", "--log-level", "debug")
	openToAll(t, d.mnt)
	must(t, os.Chown(d.srcPath("scanU"), int(cred.Uid), int(cred.Gid)))
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	must(t, os.WriteFile(secret, []byte(secretText), 0o600))
	return &swapEnv{d: d, cred: cred, outside: outside, secret: secret}
}

// userFile makes SOURCE/scanU/rel a 0644 file of the other user.
func (e *swapEnv) userFile(t *testing.T, rel, text string) {
	t.Helper()
	p := e.d.srcPath(filepath.Join("scanU", rel))
	must(t, os.WriteFile(p, []byte(text), 0o644))
	must(t, os.Chown(p, int(e.cred.Uid), int(e.cred.Gid)))
}

// userDir makes directory rel of scanU, owned by the other user.
func (e *swapEnv) userDir(t *testing.T, rel string) {
	t.Helper()
	p := e.d.srcPath(filepath.Join("scanU", rel))
	must(t, os.Mkdir(p, 0o755))
	must(t, os.Chown(p, int(e.cred.Uid), int(e.cred.Gid)))
}

// fileState describes what matters of a file: content, mode, owner and
// link count (not following a symlink).
func fileState(t *testing.T, p string) string {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	b, _ := os.ReadFile(p)
	return fmt.Sprintf("%q mode %o uid %d gid %d nlink %d", b, st.Mode, st.Uid, st.Gid, st.Nlink)
}

// pyOp runs one operation as the user on command ("go") and prints its
// outcome: "result ok" or "result ERRNO"; a read prints "data TEXT" first.
const pyOp = `
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
print("ready", flush=True)
sys.stdin.readline()
try:
    if op == "create":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, b"pwned\n")
        os.close(fd)
    elif op == "trunc-open":
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"pwned\n")
        os.close(fd)
    elif op == "unlink":
        os.unlink(path)
    elif op == "chmod":
        os.chmod(path, 0o666)
    elif op == "chown":
        os.chown(path, os.getuid(), os.getgid())
    elif op == "truncate":
        os.truncate(path, 0)
    elif op == "read":
        fd = os.open(path, os.O_RDONLY)
        data = os.read(fd, 100)
        os.close(fd)
        print("data", repr(data), flush=True)
    elif op == "list":
        print("data", " ".join(sorted(os.listdir(path))), flush=True)
    print("result ok", flush=True)
except OSError as e:
    print("result", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`

// raceOp runs op on MNT/scanU/rel as the other user while root holds
// scanU exclusively, calls swap once the operation waits for the scan,
// releases the scan and returns the operation's outcome and what it read.
func (e *swapEnv) raceOp(t *testing.T, op, rel string, swap func()) (result, data string) {
	t.Helper()
	holder := startClient(t, "root holder")
	holder.mustOpen("h", e.d.path("scanU/files.json"), "w")
	p := startPy(t, "user "+op, e.cred, pyOp, op, e.d.path(filepath.Join("scanU", rel)))
	p.expect("ready")
	p.send("go")
	e.d.waitInfo(t, "scanU", "the user's request waiting", func(doc scanstatus.InfoDoc) bool {
		for _, w := range doc.Waiters {
			if w.PID == p.pid() {
				return true
			}
		}
		return false
	})
	swap()
	holder.close("h")
	for {
		f := p.expect2("data", "result")
		if f[0] == "result" {
			return f[1], data
		}
		data = strings.Join(f[1:], " ")
	}
}

// expect2 waits for the next line starting with a or b.
func (p *pyProc) expect2(a, b string) []string {
	p.t.Helper()
	for {
		select {
		case l := <-p.lines:
			if f := strings.Fields(l); len(f) > 0 && (f[0] == a || f[0] == b) {
				return f
			}
			p.t.Logf("%s: %s", p.name, l)
		case <-p.done:
			select {
			case l := <-p.lines:
				if f := strings.Fields(l); len(f) > 0 && (f[0] == a || f[0] == b) {
					return f
				}
			default:
			}
			p.t.Fatalf("%s exited (%v) while the test waited for %q; stderr: %s", p.name, p.waitErr, b, p.err.String())
		}
	}
}

// symlinkTo replaces SOURCE/scanU/rel by a symlink to target.
func (e *swapEnv) symlinkTo(t *testing.T, rel, target string) func() {
	return func() {
		p := e.d.srcPath(filepath.Join("scanU", rel))
		if err := os.Rename(p, p+".moved"); err != nil && !os.IsNotExist(err) {
			t.Error(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Error(err)
		}
	}
}

func TestSecuritySymlinkSwapRace(t *testing.T) {
	cred := otherUser(t)

	// Writes: create over a new symlink, O_TRUNC, chmod, truncate(2) of
	// a file swapped for a symlink to the root file.
	for _, c := range []struct {
		op       string
		existing bool
	}{
		{"create", false},
		{"trunc-open", true},
		{"chmod", true},
		{"truncate", true},
	} {
		t.Run(c.op, func(t *testing.T) {
			t.Parallel()
			e := newSwapEnv(t, cred)
			if c.existing {
				e.userFile(t, "evil", "mine\n")
			}
			before := fileState(t, e.secret)
			r, _ := e.raceOp(t, c.op, "evil", e.symlinkTo(t, "evil", e.secret))
			if after := fileState(t, e.secret); after != before {
				t.Fatalf("%s through a name swapped for a symlink changed the root file (result %s):\nbefore %s\nafter  %s", c.op, r, before, after)
			}
			if r == "ok" {
				t.Fatalf("%s through a name swapped for a symlink to a root 0600 file succeeded", c.op)
			}
		})
	}

	// chown, create and unlink in scanU/d, a directory the kernel looked
	// names up in (so the daemon keeps its descriptor), with d swapped
	// for a symlink to a root directory holding a root file of the same
	// name: nothing changes there, and the create and unlink fail.
	for _, op := range []string{"chown", "create", "unlink"} {
		t.Run(op+" in a swapped directory", func(t *testing.T) {
			t.Parallel()
			e := newSwapEnv(t, cred)
			e.userDir(t, "d")
			e.userFile(t, "d/f", "mine\n")
			rootDir := filepath.Join(e.outside, "dir")
			must(t, os.Mkdir(rootDir, 0o700))
			rootFile := filepath.Join(rootDir, "f")
			must(t, os.WriteFile(rootFile, []byte(secretText), 0o600))
			before := fileState(t, rootFile)
			if _, err := os.Stat(e.d.path("scanU/d/f")); err != nil {
				t.Fatal(err)
			}
			name := map[string]string{"chown": "f", "create": "new", "unlink": "f"}[op]
			r, _ := e.raceOp(t, op, "d/"+name, e.symlinkTo(t, "d", rootDir))
			if _, err := os.Lstat(filepath.Join(rootDir, "new")); err == nil {
				t.Fatalf("a create through a directory swapped for a symlink made a file in the root directory (result %s)", r)
			}
			if after := fileState(t, rootFile); after != before {
				t.Fatalf("%s through a directory swapped for a symlink changed the root directory (result %s):\nbefore %s\nafter  %s", op, r, before, after)
			}
			if op != "chown" && r == "ok" {
				t.Fatalf("%s through a directory swapped for a symlink succeeded", op)
			}
		})
	}

	// An unlink in scanU/m under scanU's lock, m being moved on SOURCE
	// into another scan meanwhile: the file in the other scan stays.
	t.Run("unlink in a directory moved to another scan", func(t *testing.T) {
		t.Parallel()
		e := newSwapEnv(t, cred)
		e.userDir(t, "m")
		e.userFile(t, "m/f", "mine\n")
		must(t, os.Mkdir(e.d.srcPath("scanV"), 0o755))
		if _, err := os.Stat(e.d.path("scanU/m/f")); err != nil {
			t.Fatal(err)
		}
		r, _ := e.raceOp(t, "unlink", "m/f", func() {
			must(t, os.Rename(e.d.srcPath("scanU/m"), e.d.srcPath("scanV/m")))
		})
		if _, err := os.Lstat(e.d.srcPath("scanV/m/f")); err != nil || r == "ok" {
			t.Fatalf("an unlink under scanU's lock removed a file of the directory moved into scanV (result %s, stat %v)", r, err)
		}
	})

	// A read open of the user's file, replaced meanwhile by a root 0600
	// file (moved in by the user, who may rename in its directory) or by
	// a symlink to one: the user reads nothing of it.
	t.Run("read", func(t *testing.T) {
		t.Parallel()
		e := newSwapEnv(t, cred)
		e.userFile(t, "evil", "mine\n")
		must(t, os.WriteFile(e.d.srcPath("scanU/rootfile"), []byte(secretText), 0o600))
		r, data := e.raceOp(t, "read", "evil", func() {
			must(t, os.Rename(e.d.srcPath("scanU/evil"), e.d.srcPath("scanU/evil.moved")))
			must(t, os.Rename(e.d.srcPath("scanU/rootfile"), e.d.srcPath("scanU/evil")))
		})
		if strings.Contains(data, "root secret") {
			t.Fatalf("the user read a root 0600 file swapped in for its own: %s (result %s)", data, r)
		}
		r, data = e.raceOp(t, "read", "evil.moved", e.symlinkTo(t, "evil.moved", e.secret))
		if strings.Contains(data, "root secret") {
			t.Fatalf("the user read a root 0600 file through a swapped symlink: %s (result %s)", data, r)
		}
	})

	// Listing a directory swapped for a symlink to a root 0700 directory
	// (no lock: the process holds the directory as its working directory
	// while the swap happens, then lists ".").
	t.Run("list", func(t *testing.T) {
		t.Parallel()
		e := newSwapEnv(t, cred)
		e.userDir(t, "d")
		e.userFile(t, "d/mine", "mine\n")
		p := startPy(t, "user list", cred, `
import errno, os, sys
os.chdir(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
try:
    print("data", " ".join(sorted(os.listdir("."))) or "-", flush=True)
except OSError as e:
    print("data", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`, e.d.path("scanU/d"))
		p.expect("ready")
		e.symlinkTo(t, "d", e.outside)()
		p.send("go")
		if f := p.expect("data"); strings.Contains(strings.Join(f, " "), "secret") {
			t.Fatalf("the user listed a root 0700 directory through a swapped symlink: %v", f[1:])
		}
	})
}
