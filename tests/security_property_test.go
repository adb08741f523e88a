package tests

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A property of the shared mount under attack: whatever sequence of
// operations an unprivileged user runs through the mount, while root's
// programs use the same scans and a third process (the same user, on
// SOURCE directly) keeps replacing files and directories by symlinks
// (to root files outside SOURCE and in other scans), FIFOs and other
// files, no file the user may not write changes: content, mode, owner
// and link count of every sentinel file outside SOURCE and in root's
// scan stay as they were. Operation sequences are random, from a seed
// printed by the test (SCANLOCKFS_SEED=N reproduces the sequences; the
// interleaving is up to the scheduler). It runs for propertyDuration.

const propertyDuration = 12 * time.Second

// pyPropUser is the user's worker: random operations through the mount
// on its scan (and some on root's), each bounded by a 0.2 s alarm (a FIFO
// swapped in would block an open for ever).
const pyPropUser = `
import errno, os, random, signal, struct, sys, time
seed, mnt, outside, src, dur = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
rnd = random.Random(seed)
U, R = os.path.join(mnt, "scanU"), os.path.join(mnt, "scanR")
names = ["a", "b", "c", "sub", "sub/a", "sub/b", "sub/sub", "sub2", "sub2/a"]
targets = [outside + "/s0", outside + "/s1", outside + "/dir", outside + "/dir/f",
           R + "/private_0", src + "/scanR/private_1", src + "/scanR", "a", "../scanR/private_2"]
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, 7, 0xFFFFFFFF) for t in (0x01, 0x04, 0x20))
class Timeout(Exception):
    pass
def alarm(*_):
    raise Timeout()
signal.signal(signal.SIGALRM, alarm)
def rw(p, flags, data=None):
    fd = os.open(p, flags, 0o644)
    try:
        if data is None:
            os.read(fd, 4096)
        else:
            os.write(fd, data)
    finally:
        os.close(fd)
ops = {
    "read": lambda p, q: rw(p, os.O_RDONLY),
    "create": lambda p, q: rw(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, b"user data\n"),
    "write": lambda p, q: rw(p, os.O_WRONLY, b"user"),
    "append": lambda p, q: rw(p, os.O_WRONLY | os.O_APPEND, b"user"),
    "trunc-open": lambda p, q: rw(p, os.O_RDWR | os.O_TRUNC, b"u"),
    "truncate": lambda p, q: os.truncate(p, rnd.choice([0, 3])),
    "chmod": lambda p, q: os.chmod(p, rnd.choice([0o666, 0o777, 0o600, 0o4755])),
    "chown": lambda p, q: os.chown(p, rnd.choice([-1, os.getuid()]), rnd.choice([-1, os.getgid()])),
    "utime": lambda p, q: os.utime(p, (0, 0)),
    "rename": lambda p, q: os.rename(p, q),
    "link": lambda p, q: os.link(p, q),
    "symlink": lambda p, q: os.symlink(rnd.choice(targets), p),
    "unlink": lambda p, q: os.unlink(p),
    "mkdir": lambda p, q: os.mkdir(p),
    "rmdir": lambda p, q: os.rmdir(p),
    "setxattr": lambda p, q: os.setxattr(p, "user.x", b"1"),
    "set-acl": lambda p, q: os.setxattr(p, "system.posix_acl_access", acl),
    "remove-acl": lambda p, q: os.removexattr(p, "system.posix_acl_access"),
    "listdir": lambda p, q: os.listdir(p),
    "stat": lambda p, q: os.stat(p),
    "readlink": lambda p, q: os.readlink(p),
}
names_ops = sorted(ops)
counts = {}
end = time.monotonic() + dur
while time.monotonic() < end:
    op = rnd.choice(names_ops)
    p, q = os.path.join(U, rnd.choice(names)), os.path.join(U, rnd.choice(names))
    if rnd.random() < 0.15:
        p = os.path.join(R, rnd.choice(["private_0", "private_1", "public", "files.json", "metadata"]))
    res = None
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        # The alarm may fire anywhere up to the disarm, in the handlers
        # included: the outer try catches it wherever it lands.
        try:
            ops[op](p, q)
            res = "ok"
        except OSError as e:
            res = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Timeout:
        res = res or "timeout"
    signal.setitimer(signal.ITIMER_REAL, 0)
    counts[res] = counts.get(res, 0) + 1
print("done", sum(counts.values()), " ".join("%s=%d" % kv for kv in sorted(counts.items())), flush=True)
`

// pyPropSwapper is the attacker on SOURCE: it replaces the names the
// worker uses by symlinks, FIFOs, new files and directories.
const pyPropSwapper = `
import os, random, sys, time
seed, scan, outside, src, dur = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
rnd = random.Random(seed)
names = ["a", "b", "c", "sub", "sub/a", "sub/b", "sub/sub", "sub2", "sub2/a"]
targets = [outside + "/s0", outside + "/s1", outside + "/dir", outside + "/dir/f",
           src + "/scanR/private_0", src + "/scanR/private_1", src + "/scanR", src + "/users.json"]
n = 0
end = time.monotonic() + dur
while time.monotonic() < end:
    p = os.path.join(scan, rnd.choice(names))
    tmp = os.path.join(scan, ".swap%d" % n)
    n += 1
    try:
        what = rnd.randrange(6)
        if what == 0:
            os.symlink(rnd.choice(targets), tmp)
        elif what == 1:
            os.mkfifo(tmp)
        elif what == 2:
            with open(tmp, "w") as f:
                f.write("swapper\n")
        elif what == 3:
            os.mkdir(tmp)
        elif what == 4:
            os.symlink(rnd.choice(targets), tmp)
        else:
            os.rename(p, tmp)
            continue
        os.rename(tmp, p)
    except OSError:
        pass
    time.sleep(rnd.random() / 2000)
print("done", n, flush=True)
`

// pyPropRoot is root's program: it reads the user's scan (so the user's
// changes wait for it), holding each file a moment, and writes its own
// files in root's scan.
const pyPropRoot = `
import os, random, sys, time
seed, mnt, dur = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
rnd = random.Random(seed)
names = ["a", "b", "c", "sub/a", "sub2/a", "files.json"]
n = 0
end = time.monotonic() + dur
while time.monotonic() < end:
    n += 1
    try:
        if rnd.random() < 0.7:
            fd = os.open(os.path.join(mnt, "scanU", rnd.choice(names)), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            time.sleep(rnd.random() / 100)
            os.close(fd)
        else:
            with open(os.path.join(mnt, "scanR", "work", "f%d" % rnd.randrange(4)), "w") as f:
                f.write("root %d\n" % n)
    except OSError:
        pass
print("done", n, flush=True)
`

// sentinels describes every file and directory below dirs (symlinks not
// followed), except the paths in skip.
func sentinels(t *testing.T, skip map[string]bool, dirs ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if skip[p] {
				if de.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				return err
			}
			desc := fmt.Sprintf("mode %o uid %d gid %d nlink %d", st.Mode, st.Uid, st.Gid, st.Nlink)
			if st.Mode&syscall.S_IFMT == syscall.S_IFREG {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" sha256 %x", sha256.Sum256(b))
			}
			m[p] = desc
			return nil
		})
		must(t, err)
	}
	return m
}

func TestSecurityPropertySwappingAttacker(t *testing.T) {
	cred := otherUser(t)
	seed := time.Now().UnixNano()
	if s := os.Getenv("SCANLOCKFS_SEED"); s != "" {
		var err error
		seed, err = strconv.ParseInt(s, 10, 64)
		must(t, err)
	}
	t.Logf("seed %d (SCANLOCKFS_SEED=%d reproduces the operation sequences)", seed, seed)

	src := scanDB(t, "scanU", "scanR")
	must(t, os.Chown(filepath.Join(src, "scanU"), int(cred.Uid), int(cred.Gid)))
	for i := range 3 {
		must(t, os.WriteFile(filepath.Join(src, "scanR", "private_"+itoa(i)), []byte("root private "+itoa(i)+"\n"), 0o600))
	}
	must(t, os.WriteFile(filepath.Join(src, "scanR", "public"), []byte("root public\n"), 0o644))
	must(t, os.Mkdir(filepath.Join(src, "scanR", "work"), 0o755))
	outside := t.TempDir()
	must(t, os.Chmod(outside, 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "s0"), []byte("outside 0\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(outside, "s1"), []byte("outside 1\n"), 0o644))
	must(t, os.Mkdir(filepath.Join(outside, "dir"), 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "dir", "f"), []byte("outside dir f\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(outside, "dir", "g"), []byte("outside dir g\n"), 0o644))

	d := mountT(t, src, "--allow-other", "--timeout", "5s")
	openToAll(t, d.mnt)
	openToAll(t, d.srcPath("scanU"))
	openToAll(t, filepath.Join(outside, "s0"))
	base := d.leakBaseline(t)
	// Everything of root's except its own work directory, and the
	// source root with its root files.
	skip := map[string]bool{d.srcPath("scanU"): true, d.srcPath("scanR/work"): true, d.lockDir(): true}
	before := sentinels(t, skip, src, outside)

	dur := strconv.FormatFloat(propertyDuration.Seconds(), 'f', 1, 64)
	sd := strconv.FormatInt(seed, 10)
	worker := startPy(t, "user worker", cred, pyPropUser, sd, d.mnt, outside, src, dur)
	swapper := startPy(t, "swapper", cred, pyPropSwapper, strconv.FormatInt(seed+1, 10), d.srcPath("scanU"), outside, src, dur)
	root := startPy(t, "root worker", nil, pyPropRoot, strconv.FormatInt(seed+2, 10), d.mnt, dur)
	w := worker.expect("done")
	t.Logf("user worker: %s operations: %s", w[1], strings.Join(w[2:], " "))
	t.Logf("swapper: %s swaps; root worker: %s operations", swapper.expect("done")[1], root.expect("done")[1])
	for _, p := range []*pyProc{worker, swapper, root} {
		must(t, p.wait())
	}
	if atoi(t, w[1]) < 100 {
		t.Fatalf("the user worker ran only %s operations: the test proved little", w[1])
	}

	after := sentinels(t, skip, src, outside)
	var diffs []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diffs = append(diffs, p+": gone, was "+b)
		} else if a != b {
			diffs = append(diffs, p+": "+a+", was "+b)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, p+": new, "+a)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("seed %d: files the user may not write changed:\n%s", seed, strings.Join(diffs, "\n"))
	}
	if got := run(t, "cat", d.path("scanR/files.json")); got != "files of scanR\n" {
		t.Fatalf("the mount after the attack: %q", got)
	}
	waitFree(t, d.src, "scanU")
	waitFree(t, d.src, "scanR")
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}
