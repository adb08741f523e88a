package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
	"scanlockfs/mountcmd"
	"scanlockfs/tests/internal/leakcheck"
)

// Faults of the lock directory and of SOURCE while a mount runs. Every
// one gives a clear error per open (EIO, with the path and what to do in
// the daemon's log) or works without the broken part; none panics, hangs
// or leaves a lock or a half-written file behind, and the mount serves
// again once the fault is repaired.

// requireRoot skips tests that mount a tmpfs or set file attributes.
func requireRoot(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t, "tmpfs mounts, chattr")
}

// tmpfsAt mounts a tmpfs with options on a new directory and returns it;
// cleanup unmounts it (lazily if a test left it busy or already did).
func tmpfsAt(t *testing.T, options string) string {
	t.Helper()
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "tmpfs")
	must(t, os.Mkdir(dir, 0o755))
	run(t, "mount", "-t", "tmpfs", "-o", options, "tmpfs", dir)
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// immutable makes dir immutable (chattr +i): not even root can create or
// remove entries in it. Cleanup makes it mutable again.
func immutable(t *testing.T, dir string) {
	t.Helper()
	requireRoot(t)
	if code, _, stderr := runCode(t, "chattr", "+i", dir); code != 0 {
		t.Skipf("chattr +i is not supported here: exit %d: %s", code, stderr)
	}
	t.Cleanup(func() { runCode(t, "chattr", "-i", dir) })
}

// names lists a directory.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// waitLog waits until the daemon's log has a line with every want.
func (d *daemon) waitLog(t *testing.T, wants ...string) string {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(5 * time.Millisecond) {
		for _, l := range strings.Split(d.stderr.String(), "\n") {
			ok := true
			for _, w := range wants {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged a line with %q:\n%s", wants, d.stderr)
		}
	}
}

// openErrno opens path through a new slclient and returns "ok" or the
// errno name; the file is closed again.
func openErrno(t *testing.T, path, flags string) string {
	t.Helper()
	c := startClient(t, "opener")
	c.open("o", path, flags)
	r := c.result("o")
	if r.kind == "ok" {
		c.close("o")
		return "ok"
	}
	return r.errno
}

// SOURCE/.locks deleted while mounted: every open in a scan fails with
// EIO and the log says the lock directory is gone (also for a scan whose
// lock file the daemon still had open), files outside scans still work,
// and recreating the directory brings the locks back.
func TestFaultLockDirDeleted(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"))
	base := d.leakBaseline(t)
	run(t, "cat", d.path("scanA/files.json"))
	// Deleted while nobody holds a scan (cat's RELEASE is asynchronous).
	// Deleting a lock file somebody holds breaks exclusion whatever we do;
	// lockmgr logs it when that holder releases.
	waitFree(t, d.src, "scanA")
	must(t, os.RemoveAll(d.lockDir()))
	for _, scan := range []string{"scanA", "scanB"} {
		if e := openErrno(t, d.path(scan+"/files.json"), "r"); e != "EIO" {
			t.Fatalf("open in %s without a lock directory: %s, want EIO", scan, e)
		}
		d.waitLog(t, "level=error", filepath.Join(d.lockDir(), scan+".lock"), "lock directory is gone")
	}
	if got := run(t, "cat", d.path("users.json")); got != "{}\n" {
		t.Fatalf("root file without a lock directory: %q", got)
	}
	if _, err := os.Stat(d.lockDir()); !os.IsNotExist(err) {
		t.Fatalf("a failed open created something: %v", err)
	}
	must(t, os.Mkdir(d.lockDir(), 0o2775))
	w := startClient(t, "writer")
	w.openHolding("w", d.path("scanA/files.json"), "w", d.src, "scanA", "exclusive")
	w.close("w")
	waitFree(t, d.src, "scanA")
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// A lock directory nobody may write to (immutable: not even root can
// create files in it). The mount refuses to start on it, naming it. Made
// so while mounted: a scan whose lock file exists still locks (its .info
// cannot be written, which is logged), a scan without one gets EIO with
// the path and the fix in the log, and nothing is created.
func TestFaultLockDirNotWritable(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	t.Run("at mount", func(t *testing.T) {
		t.Parallel()
		src := scanDB(t, "scanA")
		must(t, os.Mkdir(filepath.Join(src, ".locks"), 0o2775))
		immutable(t, filepath.Join(src, ".locks"))
		mnt := t.TempDir()
		code, _, stderr := runCode(t, binScanlockfs, "mount", src, mnt)
		if code != mountcmd.ExitMount || !strings.Contains(stderr, filepath.Join(src, ".locks")) || !strings.Contains(stderr, "not writable") {
			t.Fatalf("mount on a read-only lock directory: exit %d, %s", code, stderr)
		}
		if isMounted(mnt) {
			t.Fatal("mounted anyway")
		}
	})
	t.Run("while mounted", func(t *testing.T) {
		t.Parallel()
		d := mountT(t, scanDB(t, "scanA", "scanB"))
		base := d.leakBaseline(t)
		run(t, "cat", d.path("scanA/files.json"))
		// A lockmgr user that started before (New checks the directory).
		direct := startClient(t, "direct")
		direct.send("try T0 %s scanA shared", d.src)
		if r := direct.result("T0"); r.kind != "ok" {
			t.Fatalf("direct user: %s", r.errno)
		}
		direct.send("unlock T0")
		direct.result("T0")
		immutable(t, d.lockDir())
		w := startWriter(t, d.path("scanA/files.json"))
		d.waitLog(t, "could not write lock info file", "scan=scanA")
		// The lock is real although its .info could not be written.
		direct.send("try T %s scanA shared", d.src)
		if r := direct.result("T"); r.kind != "err" || r.errno != "WOULDBLOCK" {
			t.Fatalf("direct user while the mount holds scanA without .info: %+v", r)
		}
		if e := openErrno(t, d.path("scanB/files.json"), "r"); e != "EIO" {
			t.Fatalf("scan without a lock file in a read-only lock directory: %s, want EIO", e)
		}
		d.waitLog(t, "level=error", filepath.Join(d.lockDir(), "scanB.lock"), "no permission")
		w.close("w")
		direct.send("lock L %s scanA exclusive", d.src)
		if r := direct.result("L"); r.kind != "ok" {
			t.Fatalf("direct user after the mount's writer closed: %s", r.errno)
		}
		direct.send("unlock L")
		direct.result("L")
		if got := names(t, d.lockDir()); !slices.Equal(got, []string{"scanA.lock"}) {
			t.Fatalf("lock directory: %v", got)
		}
		run(t, "chattr", "-i", d.lockDir())
		if e := openErrno(t, d.path("scanB/files.json"), "r"); e != "ok" {
			t.Fatalf("scanB once the lock directory is writable again: %s", e)
		}
		d.checkNoLeaks(t, base)
		d.stopNoLeaks(t)
	})
}

// fill writes to dir until its file system is full (ENOSPC), in blocks
// and then in inodes if inodes is set; it returns the files it made.
func fill(t *testing.T, dir string, inodes bool) []string {
	t.Helper()
	var made []string
	f, err := os.CreateTemp(dir, "filler")
	must(t, err)
	made = append(made, f.Name())
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !strings.Contains(err.Error(), "no space") {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()
	for i := 0; inodes; i++ {
		p := filepath.Join(dir, "inode"+itoa(i))
		err := os.WriteFile(p, nil, 0o644)
		if err != nil {
			if !strings.Contains(err.Error(), "no space") {
				t.Fatal(err)
			}
			break
		}
		made = append(made, p)
	}
	return made
}

// ENOSPC on SOURCE (a small tmpfs). With no space for data, a lock is
// still granted and exclusive; its .info cannot be written, which is
// logged, and no temporary file is left. With no inode left, a scan
// without a lock file gets EIO naming the lock file and saying the file
// system is full, and nothing is created. Once space is freed, both work,
// .info included.
func TestFaultNoSpace(t *testing.T) {
	t.Parallel()
	src := filepath.Join(tmpfsAt(t, "size=512k,nr_inodes=64"), "db")
	must(t, os.Mkdir(src, 0o755))
	for _, s := range []string{"scanA", "scanB"} {
		must(t, os.Mkdir(filepath.Join(src, s), 0o755))
		must(t, os.WriteFile(filepath.Join(src, s, "files.json"), []byte("files of "+s+"\n"), 0o644))
	}
	d := mountT(t, src)
	base := d.leakBaseline(t)
	run(t, "cat", d.path("scanA/files.json"))

	made := fill(t, src, false)
	w := startWriter(t, d.path("scanA/files.json"))
	d.waitLog(t, "could not write lock info file", "scan=scanA", "no space left")
	if st := lockState(t, src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scan %s with a full disk", st.State)
	}
	if got := names(t, d.lockDir()); !slices.Equal(got, []string{"scanA.lock"}) {
		t.Fatalf("lock directory with a full disk: %v (half-written .info or temporary files?)", got)
	}
	w.close("w")
	waitFree(t, src, "scanA")

	made = append(made, fill(t, src, true)...)
	if e := openErrno(t, d.path("scanB/files.json"), "r"); e != "EIO" {
		t.Fatalf("open in a scan without lock file, no inode left: %s, want EIO", e)
	}
	d.waitLog(t, "level=error", filepath.Join(d.lockDir(), "scanB.lock"), "file system is full")
	if got := names(t, d.lockDir()); !slices.Equal(got, []string{"scanA.lock"}) {
		t.Fatalf("lock directory with no inode left: %v", got)
	}

	for _, p := range made {
		must(t, os.Remove(p))
	}
	w.mustOpen("w", d.path("scanB/files.json"), "w")
	waitInfo(t, filepath.Join(d.lockDir(), "scanB.info"), d.cmd.Process.Pid)
	w.close("w")
	waitFree(t, src, "scanB")
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// corruptInfo is half of a .info file, as a writer killed in the middle
// of plantdb's in-place write leaves it.
const corruptInfo = `{"scan_id": "scanA", "lock_type": "excl`

// writeCorruptInfo replaces SOURCE/.locks/scanA.info with a torn file,
// dated age ago.
func writeCorruptInfo(t *testing.T, src string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(src, ".locks", "scanA.info")
	tmp := p + ".corrupt"
	must(t, os.WriteFile(tmp, []byte(corruptInfo), 0o644))
	old := time.Now().Add(-age)
	must(t, os.Chtimes(tmp, old, old))
	must(t, os.Rename(tmp, p))
	return p
}

// A corrupt .info: status still answers (exit 0) and says which file is
// unreadable; locks still work; the mount's start and cleanup remove it
// when nobody holds the scan; and one that replaced the daemon's own
// while it holds the scan is left alone by the daemon's release (not its
// file) and removed by cleanup.
func TestFaultCorruptInfo(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	must(t, os.Mkdir(filepath.Join(src, ".locks"), 0o2775))
	must(t, os.WriteFile(filepath.Join(src, ".locks", "scanA.lock"), nil, 0o664))
	info := writeCorruptInfo(t, src, time.Minute)
	code, out, stderr := runCode(t, binScanlockfs, "status", src, "scanA")
	if code != 0 || !strings.Contains(out, "free") || !strings.Contains(stderr, info) || !strings.Contains(stderr, "not valid JSON") {
		t.Fatalf("status with a corrupt .info: exit %d\n%s%s", code, out, stderr)
	}
	d := mountT(t, src, "--log-level", "debug")
	base := d.leakBaseline(t)
	if _, err := os.Stat(info); !os.IsNotExist(err) {
		t.Fatalf("the mount's stale clean-up left the corrupt .info: %v", err)
	}

	w := startWriter(t, d.path("scanA/files.json"))
	waitInfo(t, info, d.cmd.Process.Pid)
	writeCorruptInfo(t, src, 0)
	code, out, stderr = runCode(t, binScanlockfs, "status", src, "scanA")
	// The holder shows as the program that holds it through the mount.
	if code != 0 || !strings.Contains(out, "exclusive") || !strings.Contains(out, itoa(w.pid())) || !strings.Contains(stderr, info) {
		t.Fatalf("status of a held scan with a corrupt .info: exit %d\n%s%s", code, out, stderr)
	}
	w.close("w")
	waitFree(t, src, "scanA")
	if b, err := os.ReadFile(info); err != nil || string(b) != corruptInfo {
		t.Fatalf("the daemon's release touched a .info that was not its own: %q, %v", b, err)
	}
	code, out, stderr = runCode(t, binScanlockfs, "cleanup", src)
	if code != 0 || !strings.Contains(out, info) {
		t.Fatalf("cleanup: exit %d\n%s%s", code, out, stderr)
	}
	if _, err := os.Stat(info); !os.IsNotExist(err) {
		t.Fatalf("cleanup left the corrupt .info: %v", err)
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// A torn .info left by a process that died writing it a minute ago is
// not a plantdb process in the middle of its release: acquisitions must
// not wait for it to go away (lockmgr's wait for a releasing plantdb
// process, up to a second per acquisition, for as long as the file
// stays).
func TestFaultStaleTornInfoCostsNoWait(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--log-level", "debug")
	base := d.leakBaseline(t)
	run(t, "cat", d.path("scanA/files.json"))
	writeCorruptInfo(t, d.src, time.Minute)
	for range 3 {
		run(t, "cat", d.path("scanA/files.json"))
	}
	if strings.Contains(d.stderr.String(), "plantdb process is releasing") {
		t.Fatalf("acquisitions waited for a torn .info written a minute ago:\n%s", d.stderr)
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// A directory where a lock file should be (the reference design's EINVAL
// pitfall): opens in that scan get EIO and the log names the path and
// says to remove it; lockmgr users, run and cleanup fail naming it; other
// scans are unaffected; nothing is changed; removing it repairs the scan.
func TestFaultDirectoryAsLockFile(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA", "scanB")
	lock := filepath.Join(src, ".locks", "scanA.lock")
	must(t, os.MkdirAll(lock, 0o755))
	d := mountT(t, src)
	base := d.leakBaseline(t)
	code, _, stderr := runCode(t, "cat", d.path("scanA/files.json"))
	if code == 0 || !strings.Contains(stderr, "Input/output error") {
		t.Fatalf("cat in the scan: exit %d, %s", code, stderr)
	}
	d.waitLog(t, "level=error", lock, "is a directory", "remove it")
	direct := startClient(t, "direct")
	direct.send("lock L %s scanA shared", src)
	if r := direct.result("L"); r.kind != "err" || !strings.Contains(r.errno, lock) {
		t.Fatalf("direct lockmgr user: %+v, want an error naming %s", r, lock)
	}
	code, _, stderr = runCode(t, binScanlockfs, "run", "-x", src, "scanA", "--", "true")
	if code != 1 || !strings.Contains(stderr, lock) || !strings.Contains(stderr, "is a directory") {
		t.Fatalf("run: exit %d, %s", code, stderr)
	}
	code, _, stderr = runCode(t, binScanlockfs, "cleanup", src)
	if code != 1 || !strings.Contains(stderr, lock) {
		t.Fatalf("cleanup: exit %d, %s", code, stderr)
	}
	if got := run(t, "cat", d.path("scanB/files.json")); got != "files of scanB\n" {
		t.Fatalf("other scan: %q", got)
	}
	if st, err := os.Stat(lock); err != nil || !st.IsDir() {
		t.Fatalf("the directory was changed: %v", err)
	}
	must(t, os.Remove(lock))
	if got := run(t, "cat", d.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("scanA once repaired: %q", got)
	}
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}

// scanlockfs status on a scan whose lock file is a directory must not
// answer "free" as if all were well: nobody can lock that scan.
func TestFaultDirectoryAsLockFileInStatus(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	lock := filepath.Join(src, ".locks", "scanA.lock")
	must(t, os.MkdirAll(lock, 0o755))
	_, out, stderr := runCode(t, binScanlockfs, "status", src, "scanA")
	if !strings.Contains(out+stderr, lock) {
		t.Fatalf("status does not name the unusable lock file %s:\n%s%s", lock, out, stderr)
	}
}

// scanlockfs status only reads (/proc/locks and the .info files): it
// must work where it cannot write, such as on a lock directory that is
// not writable for the user asking.
func TestFaultStatusOnReadOnlyLockDir(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	must(t, os.Mkdir(filepath.Join(src, ".locks"), 0o2775))
	must(t, os.WriteFile(filepath.Join(src, ".locks", "scanA.lock"), nil, 0o664))
	immutable(t, filepath.Join(src, ".locks"))
	code, out, stderr := runCode(t, binScanlockfs, "status", src, "scanA")
	if code != 0 || !strings.Contains(out, "free") {
		t.Fatalf("status on a read-only lock directory: exit %d\n%s%s", code, out, stderr)
	}
}

// SOURCE disappears under a running mount: a tmpfs unmounted lazily, or
// the directory removed. New opens fail with ENOENT; a program that had a
// file open goes on with it and closes it, which releases its lock; the
// mount answers, and unmounts cleanly; nothing panics.
func TestFaultSourceGone(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		gone func(t *testing.T, src string)
	}{
		{"tmpfs unmounted lazily", func(t *testing.T, src string) {
			must(t, unix.Unmount(filepath.Dir(src), unix.MNT_DETACH))
		}},
		{"directory removed", func(t *testing.T, src string) {
			must(t, os.RemoveAll(src))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := filepath.Join(tmpfsAt(t, "size=1m"), "db")
			must(t, os.Mkdir(src, 0o755))
			must(t, os.Mkdir(filepath.Join(src, "scanA"), 0o755))
			must(t, os.WriteFile(filepath.Join(src, "scanA", "files.json"), []byte("a\n"), 0o644))
			d := mountT(t, src)
			holder := startClient(t, "holder")
			holder.mustOpen("h", d.path("scanA/files.json"), "b")
			c.gone(t, src)
			if e := openErrno(t, d.path("scanA/files.json"), "r"); e != "ENOENT" {
				t.Fatalf("open after SOURCE went: %s, want ENOENT", e)
			}
			holder.send("write h still writing")
			if r := holder.result("h"); r.kind != "ok" {
				t.Fatalf("the holder's write after SOURCE went: %s", r.errno)
			}
			holder.close("h")
			// Its lock is released: the daemon holds no flock.
			for deadline := time.Now().Add(waitLimit); ; time.Sleep(5 * time.Millisecond) {
				s, err := leakcheck.Take(d.cmd.Process.Pid, d.lockDir(), "")
				must(t, err)
				if len(s.Flocks) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the daemon still holds %v", s.Flocks)
				}
			}
			if _, err := os.ReadDir(d.mnt); err != nil && !os.IsNotExist(err) {
				t.Fatalf("listing the mount: %v", err)
			}
			d.stopNoLeaks(t)
		})
	}
}
