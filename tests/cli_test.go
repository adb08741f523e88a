package tests

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
	"scanlockfs/internal/testutil"
	"scanlockfs/mountcmd"
)

// mount refuses bad arguments with a message naming the path and what to
// do, and a distinct exit code, before it touches anything.
func TestMountRefusals(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	empty := t.TempDir()
	notEmpty := t.TempDir()
	must(t, os.WriteFile(filepath.Join(notEmpty, "x"), nil, 0o644))
	file := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(file, nil, 0o644))
	inside := filepath.Join(src, "scanA", "mnt")
	must(t, os.Mkdir(inside, 0o755))
	missing := filepath.Join(t.TempDir(), "missing")

	cases := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"no arguments", nil, 2, []string{"SOURCE and MOUNTPOINT"}},
		{"one argument", []string{src}, 2, []string{"SOURCE and MOUNTPOINT"}},
		{"missing SOURCE", []string{missing, empty}, 6, []string{missing, "does not exist"}},
		{"SOURCE is a file", []string{file, empty}, 2, []string{file, "not a directory"}},
		{"MOUNTPOINT missing", []string{src, missing}, 6, []string{missing, "mkdir"}},
		{"MOUNTPOINT is a file", []string{src, file}, 5, []string{file, "not a directory"}},
		{"MOUNTPOINT not empty", []string{src, notEmpty}, 5, []string{notEmpty, "not empty"}},
		{"MOUNTPOINT inside SOURCE", []string{src, inside}, 2, []string{inside, "inside SOURCE"}},
		{"MOUNTPOINT is SOURCE", []string{src, src}, 2, []string{"inside SOURCE"}},
		{"bad timeout", []string{"--timeout", "soon", src, empty}, 2, []string{"--timeout"}},
		{"bad flag", []string{"--frobnicate", src, empty}, 2, []string{"frobnicate"}},
	}
	for _, c := range cases {
		code, stderr, _ := runErr(t, binScanlockfs, append([]string{"mount"}, c.args...)...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d; stderr: %s", c.name, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr lacks %q: %s", c.name, w, stderr)
			}
		}
	}
	if isMounted(empty) {
		t.Fatal("a refused mount mounted something")
	}
}

// SIGTERM (and SIGINT) unmount cleanly and exit 0 with every lock
// released. With a file still open, the mount is detached lazily and
// keeps serving it; the scan stays locked until the file is closed.
func TestSignalsUnmountCleanly(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		src := scanDB(t, "scanA")
		d := mountT(t, src)
		d.allowExit = true
		run(t, "cat", d.path("scanA/files.json"))
		must(t, d.cmd.Process.Signal(sig))
		if code := d.waitExit(t); code != mountcmd.ExitOK {
			t.Fatalf("%v: exit %d\n%s", sig, code, d.stderr)
		}
		if isMounted(d.mnt) {
			t.Fatalf("%v: still mounted", sig)
		}
		if st := lockState(t, src, "scanA"); st.State != "free" {
			t.Fatalf("%v: scan %s after exit", sig, st.State)
		}
	}

	// A writer keeps its file open across the SIGTERM.
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	d.allowExit = true
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "wt")
	must(t, d.cmd.Process.Signal(syscall.SIGTERM))
	waitUnmounted(t, d.mnt, "after SIGTERM")
	select {
	case <-d.exited:
		t.Fatalf("daemon exited while a file was open: %v\n%s", d.waitErr, d.stderr)
	default:
	}
	if st := lockState(t, src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scan %s while the detached writer still has its file", st.State)
	}
	w.send("write w still served")
	if r := w.result("w"); r.kind != "ok" {
		t.Fatalf("write to the detached mount: %s", r.errno)
	}
	w.close("w")
	if code := d.waitExit(t); code != mountcmd.ExitOK {
		t.Fatalf("exit %d after the last file closed\n%s", code, d.stderr)
	}
	waitFree(t, src, "scanA")
	if b, _ := os.ReadFile(filepath.Join(src, "scanA/files.json")); string(b) != "still served" {
		t.Fatalf("content: %q", b)
	}
}

// What the README says of SIGINT/SIGTERM with a file open: the mount is
// detached and keeps serving it; a second signal stops the daemon at once
// (exit 5): the program's next call fails with ENOTCONN and the scan is
// free.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src, "--no-passthrough") // with passthrough, I/O would not reach the daemon
	d.allowExit = true
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "wt")
	must(t, d.cmd.Process.Signal(syscall.SIGTERM))
	waitUnmounted(t, d.mnt, "after SIGTERM")
	must(t, d.cmd.Process.Signal(syscall.SIGTERM))
	if code := d.waitExit(t); code != mountcmd.ExitMount {
		t.Fatalf("exit %d after a second signal, want %d (ExitMount)\n%s", code, mountcmd.ExitMount, d.stderr)
	}
	if !strings.Contains(d.stderr.String(), "still open") {
		t.Errorf("the daemon does not say that files were still open:\n%s", d.stderr)
	}
	waitFree(t, src, "scanA")
	w.send("write w too late")
	if r := w.result("w"); r.kind == "ok" || r.errno != "ENOTCONN" {
		t.Fatalf("write after the daemon stopped: %s %s, want ENOTCONN", r.kind, r.errno)
	}
}

// The real SOURCE/.locks is not part of the mount: the status view
// takes its name. Its lock files cannot be reached through the mount, and
// .locks cannot be removed, replaced or renamed.
func TestLockDirIsHidden(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	// Make sure there is a lock file to hide.
	w := startWriter(t, d.path("scanA/files.json"))
	if _, err := os.Stat(d.srcPath(".locks/scanA.lock")); err != nil {
		t.Fatalf("no lock file on SOURCE: %v", err)
	}
	if out := run(t, "ls", "-a", d.mnt); strings.Count(out, ".locks\n") != 1 || !strings.Contains(out, "scanA") {
		t.Fatalf("ls -a of the mount: %q", out)
	}
	if _, err := os.Stat(d.path(".locks/status.json")); err != nil {
		t.Fatalf("stat .locks/status.json: %v", err)
	}
	// .locks/scanA.lock is the mount's own lock file (for flock(1) and
	// plantdb), not SOURCE's: another inode, and not listed.
	real, err := os.Stat(d.srcPath(".locks/scanA.lock"))
	must(t, err)
	if fi, err := os.Stat(d.path(".locks/scanA.lock")); err != nil || os.SameFile(fi, real) || fi.Size() != 0 {
		t.Fatalf("stat .locks/scanA.lock through the mount: %v, %+v", err, fi)
	}
	if out := run(t, "ls", "-a", d.path(".locks")); strings.Contains(out, "scanA.lock") {
		t.Fatalf("ls -a .locks lists SOURCE's lock file: %q", out)
	}
	for name, c := range map[string]struct {
		op   func() error
		want syscall.Errno
	}{
		"mkdir":   {func() error { return os.Mkdir(d.path(".locks"), 0o755) }, syscall.EEXIST},
		"create":  {func() error { return os.WriteFile(d.path(".locks"), nil, 0o644) }, syscall.EISDIR},
		"symlink": {func() error { return os.Symlink("scanA", d.path(".locks")) }, syscall.EEXIST},
		// syscall.Rename: os.Rename refuses a directory target itself.
		"rename file": {func() error { return syscall.Rename(d.path("users.json"), d.path(".locks")) }, syscall.EISDIR},
		"rename dir":  {func() error { return syscall.Rename(d.path("scanA"), d.path(".locks")) }, syscall.EPERM},
		"rename away": {func() error { return os.Rename(d.path(".locks"), d.path("x")) }, syscall.EPERM},
		"link":        {func() error { return os.Link(d.path("users.json"), d.path(".locks")) }, syscall.EEXIST},
		"rmdir":       {func() error { return syscall.Rmdir(d.path(".locks")) }, syscall.EPERM},
	} {
		if err := c.op(); !errors.Is(err, c.want) {
			t.Errorf("%s .locks: %v, want %v", name, err, c.want)
		}
	}
	if _, err := os.Stat(d.srcPath(".locks/scanA.lock")); err != nil {
		t.Fatalf("lock file on SOURCE after the attempts: %v", err)
	}
	w.close("w")
	// Elsewhere .locks is an ordinary name.
	run(t, "mkdir", d.path("scanA/.locks"))
}

// --read-only: reads work and take shared locks; writes fail with EROFS.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--read-only")
	if got := run(t, "cat", d.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat: %q", got)
	}
	for _, argv := range [][]string{
		{"sh", "-c", "echo x >> " + d.path("scanA/files.json")},
		{"touch", d.path("scanA/new")},
		{"rm", d.path("scanA/files.json")},
		{"mkdir", d.path("scanA/dir")},
	} {
		code, stderr, _ := runErr(t, argv[0], argv[1:]...)
		if code == 0 || !strings.Contains(stderr, "Read-only file system") {
			t.Errorf("%v: exit %d, %s", argv, code, stderr)
		}
	}
	// A reader still takes the shared lock.
	r := startClient(t, "reader")
	r.openHolding("r", d.path("scanA/files.json"), "r", d.src, "scanA", "shared")
	r.close("r")
}

// --allow-other mounts with allow_other and default_permissions, so the
// kernel checks permissions for other users.
func TestAllowOtherSetsDefaultPermissions(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"), "--allow-other")
	ms, err := procfs.ReadMountinfo()
	must(t, err)
	for _, m := range ms {
		if m.MountPoint == d.mnt {
			if opts := m.Options + "," + m.SuperOptions; !strings.Contains(opts, "default_permissions") || !strings.Contains(opts, "allow_other") {
				t.Fatalf("mount options: %+v", m)
			}
			return
		}
	}
	t.Fatal("mount not found in mountinfo")
}

// Passthrough is in use: with it, reads and writes go from the kernel to
// the backing file and never reach the daemon (its counters stay at 0);
// without it they do. Only root can register backing files.
func TestPassthroughKeepsDataOutOfTheDaemon(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t, "passthrough (CAP_SYS_ADMIN)")
	for _, c := range []struct {
		flags   []string
		through bool
	}{{nil, false}, {[]string{"--no-passthrough"}, true}} {
		d := mountT(t, scanDB(t, "scanA"), c.flags...)
		d.allowExit = true
		run(t, "dd", "if=/dev/zero", "of="+d.path("scanA/big"), "bs=1M", "count=8", "status=none")
		run(t, "sh", "-c", "cat "+d.path("scanA/big")+" > /dev/null")
		d.stopAndCheck(t, "opens=2")
		reads := strings.Contains(d.stderr.String(), "daemon_reads=0 daemon_writes=0")
		if reads == c.through {
			t.Errorf("flags %v: %s", c.flags, lastLine(d.stderr.String()))
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Clients' own flock(2) locks on files of the mount are taken on the
// daemon's descriptor of the backing file: they exclude other clients of
// the mount and programs on SOURCE, and take no scan lock (documented).
func TestClientFlocksReachSource(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	held := filepath.Join(t.TempDir(), "held")
	release := filepath.Join(t.TempDir(), "release")
	holder := startProgram(t, "flock", "-x", d.path("scanA/files.json"), "sh", "-c",
		"touch "+held+"; while [ ! -e "+release+" ]; do sleep 0.01; done")
	deadline := time.Now().Add(waitLimit)
	for {
		if _, err := os.Stat(held); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flock holder never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	busy := func(what, path string) {
		t.Helper()
		if code, _, _ := runErr(t, "flock", "-n", "-x", path, "true"); code != 1 {
			must(t, os.WriteFile(release, nil, 0o644))
			t.Fatalf("flock %s while the mount's client holds it: exit %d, want 1 (busy)", what, code)
		}
	}
	busy("through the mount", d.path("scanA/files.json"))
	busy("on SOURCE", d.srcPath("scanA/files.json"))
	must(t, os.WriteFile(release, nil, 0o644))
	holder.wait(t)
	run(t, "flock", "-n", "-x", d.path("scanA/files.json"), "true")
	run(t, "flock", "-n", "-x", d.srcPath("scanA/files.json"), "true")
}
