package tests

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"scanlockfs/internal/procfs"
)

// pidReuser is a python3 program run as root that makes the next process
// it forks get pid WANT (by writing WANT-1 to ns_last_pid just before
// the fork, again until no other process of the machine took WANT
// first). That process drops to the other user (UID, GID) at once and
// acts as an attacker would after forking until it got the pid: it opens
// the scan directory (which takes no lock) and forks a child, which so
// holds a descriptor into the scan and has WANT as its parent. The child
// opens FILE for writing with O_NONBLOCK and reports
//
//	first opened | first ERRNO
//
// then waits for a line on stdin and opens FILE again, blocking:
//
//	second opened | second ERRNO
const pidReuser = `
import errno, os, sys
scan, target, uid, gid, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def try_open(tag, flags):
    try:
        os.close(os.open(target, flags))
        print(tag, 'opened', flush=True)
    except OSError as e:
        print(tag, errno.errorcode.get(e.errno, str(e.errno)), flush=True)

def attacker():
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.chdir('/')
    dfd = os.open(scan, os.O_RDONLY | os.O_DIRECTORY)
    child = os.fork()
    if child == 0:
        try_open('first', os.O_WRONLY | os.O_NONBLOCK)
        sys.stdin.readline()
        try_open('second', os.O_WRONLY)
        os._exit(0)
    os.waitpid(child, 0)

for attempt in range(1000):
    with open('/proc/sys/kernel/ns_last_pid', 'w') as f:
        f.write(str(want - 1))
    pid = os.fork()
    if pid == 0:
        if os.getpid() == want:
            try:
                attacker()
            except BaseException as e:
                print('error', repr(e), flush=True)
                os._exit(1)
        os._exit(0)
    if pid == want:
        print('reused', pid, 'after', attempt, 'misses', flush=True)
        os.waitpid(pid, 0)
        sys.exit(0)
    os.waitpid(pid, 0)
print('missed', flush=True)
sys.exit(1)
`

// TestSecurityPidReuse: a lease whose opener exited (a shell that opened
// a file and left it to a background child) belongs to that process and
// nobody else. Another user whose process gets the same pid, and whose
// child holds a descriptor into the scan, must not pass for the holder
// (the inherited-descriptor rule matches the ancestor by pid and start
// time): its write waits until root's child lets the file go.
//
// Not parallel: otherUser's name is per test binary.
func TestSecurityPidReuse(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/proc/sys/kernel/ns_last_pid"); err != nil {
		t.Fatalf("the test needs ns_last_pid to reuse a pid: %v", err)
	}
	cred := otherUser(t)
	d := mountT(t, scanDB(t, "scanA"), "--allow-other", "--log-level", "debug")
	openToAll(t, d.mnt)
	base := d.leakBaseline(t)
	// A file the other user may write, so that only the lock stops it.
	theirs := d.srcPath("scanA/theirs")
	must(t, os.WriteFile(theirs, nil, 0o644))
	must(t, os.Chown(theirs, int(cred.Uid), int(cred.Gid)))

	// Root's holder: the shell opens files.json for appending, leaves the
	// descriptor to a background sleep and exits. The lease stays (the
	// kernel keeps the open file), owned by the exited shell.
	out := run(t, "sh", "-c", `exec 3>>"$1"; sleep 600 >/dev/null 2>&1 & echo $$ $!`, "sh", d.path("scanA/files.json"))
	f := strings.Fields(out)
	if len(f) != 2 {
		t.Fatalf("holder shell printed %q", out)
	}
	opener, keeper := atoi(t, f[0]), atoi(t, f[1])
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = syscall.Kill(keeper, syscall.SIGKILL)
		}
	})
	if st := lockState(t, d.src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scanA is %s while root's background child holds it", st.State)
	}
	if _, err := procfs.ReadStat(opener); err == nil {
		t.Fatalf("the opener %d still exists", opener)
	}

	p := startPy(t, "pid reuser", nil, pidReuser, d.path("scanA"), d.path("scanA/theirs"),
		strconv.Itoa(int(cred.Uid)), strconv.Itoa(int(cred.Gid)), strconv.Itoa(opener))
	r := p.expect("reused")
	t.Logf("pid %s reused after %s misses", r[1], r[3])
	first := p.expect("first")
	if st := lockState(t, d.src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scanA is %s after the attacker's open; root's child holds it", st.State)
	}
	if first[1] != "EAGAIN" {
		t.Fatalf("the other user's process with the reused pid %d of root's exited opener opened a file of scanA for writing "+
			"while root's child holds the scan exclusively: %s, want EAGAIN", opener, first[1])
	}

	// Once root's child lets go, the other user gets the scan as anybody.
	must(t, syscall.Kill(keeper, syscall.SIGKILL))
	killed = true
	waitFree(t, d.src, "scanA")
	p.send("again")
	if second := p.expect("second"); second[1] != "opened" {
		t.Fatalf("the other user's write after root's child let go: %s", second[1])
	}
	if err := p.wait(); err != nil {
		t.Fatalf("pid reuser: %v", err)
	}
	waitFree(t, d.src, "scanA")
	d.checkNoLeaks(t, base)
}
