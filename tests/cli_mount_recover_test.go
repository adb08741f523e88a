package tests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
	"scanlockfs/mountcmd"
)

// mountOnT is mountT on a given MOUNTPOINT (one that holds a dead mount,
// say).
func mountOnT(t testing.TB, src, mnt string, flags ...string) *daemon {
	t.Helper()
	requireFUSE(t)
	d := startDaemon(t, src, mnt, flags...)
	waitReadyLine(t, d)
	t.Cleanup(d.cleanup)
	return d
}

// waitReadyLine waits for the daemon's readiness line.
func waitReadyLine(t testing.TB, d *daemon) {
	t.Helper()
	line := fmt.Sprintf("scanlockfs: mounted %s on %s\n", d.src, d.mnt)
	for deadline := time.Now().Add(waitLimit); d.stdout.String() != line; time.Sleep(5 * time.Millisecond) {
		select {
		case <-d.exited:
			t.Fatalf("scanlockfs mount exited before it was ready: %v\nstdout: %s\nstderr: %s", d.waitErr, d.stdout, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no readiness line %q; stdout %q\nstderr: %s", line, d.stdout, d.stderr)
		}
	}
}

// killServer kills the daemon with SIGKILL and leaves its dead mount
// behind, as a crash does; cleanup detaches whatever is left.
func killServer(t *testing.T, d *daemon) {
	t.Helper()
	d.allowExit = true
	must(t, d.cmd.Process.Signal(syscall.SIGKILL))
	d.waitExit(t)
	// The kernel may answer from its attribute cache for the attribute
	// timeout (100 ms) before it asks the dead server.
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(d.mnt)
		if errors.Is(err, syscall.ENOTCONN) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat of the mount after SIGKILL: %v, want ENOTCONN", err)
		}
	}
	t.Cleanup(func() { _ = exec.Command("fusermount3", "-u", "-z", d.mnt).Run() })
}

// After a SIGKILL of the server, mount refuses the dead mount with exit
// code 5 and says how to clear it; `mount --recover` clears it and mounts
// again in one command, and the new mount serves files and takes locks
// (the killed server's lock died with it).
func TestMountRecoverAfterSIGKILL(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "w")
	if st := lockState(t, src, "scanA"); st.State != "exclusive" {
		t.Fatalf("scanA is %s under a writer", st.State)
	}
	w.close("w")
	waitFree(t, src, "scanA")
	killServer(t, d)

	code, stderr, _ := runErr(t, binScanlockfs, "mount", src, d.mnt)
	for _, want := range []string{d.mnt, "dead FUSE mount", "--recover", "'scanlockfs unmount " + d.mnt + "'"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("mount on the dead mount: stderr lacks %q: %s", want, stderr)
		}
	}
	if code != mountcmd.ExitMount {
		t.Errorf("mount on the dead mount: exit %d, want %d (ExitMount)", code, mountcmd.ExitMount)
	}
	if strings.Contains(stderr, "goroutine") {
		t.Errorf("a stack trace for a user error: %s", stderr)
	}
	if _, err := os.Stat(d.mnt); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("mount without --recover touched the dead mount: stat gives %v", err)
	}

	d2 := mountOnT(t, src, d.mnt, "--recover")
	if !strings.Contains(d2.stderr.String(), "unmounted a dead mount") {
		t.Errorf("the log does not say that the dead mount was unmounted:\n%s", d2.stderr)
	}
	if got := run(t, "cat", d2.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat through the recovered mount: %q", got)
	}
	r := startClient(t, "reader")
	r.mustOpen("r", d2.path("scanA/files.json"), "r")
	if st := lockState(t, src, "scanA"); st.State != "shared" {
		t.Fatalf("scanA is %s under a reader of the recovered mount", st.State)
	}
	r.close("r")
	if n := strings.Count(mountinfoLines(d2.mnt), "\n"); n != 1 {
		t.Fatalf("%d mounts on %s after recovery, want 1:\n%s", n, d2.mnt, mountinfoLines(d2.mnt))
	}
}

// A dead mount that a process still uses (an open file, a working
// directory) cannot be unmounted: --recover detaches it lazily and mounts
// over it. The process keeps getting ENOTCONN for the old mount (except
// through descriptors the kernel serves by passthrough); new paths reach
// the new one.
func TestMountRecoverDetachesABusyDeadMount(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "w")
	sitter := exec.Command("sleep", "600")
	sitter.Dir = d.mnt
	must(t, sitter.Start())
	t.Cleanup(func() { _ = sitter.Process.Kill(); _ = sitter.Wait() })
	killServer(t, d)

	d2 := mountOnT(t, src, d.mnt, "--recover")
	if !strings.Contains(d2.stderr.String(), "detached a dead mount") {
		t.Errorf("the log does not say that the busy dead mount was detached:\n%s", d2.stderr)
	}
	// The killed server's exclusive lock died with it.
	waitFree(t, src, "scanA")
	run(t, "sh", "-c", "echo recovered > "+d2.path("scanA/files.json"))
	if b, _ := os.ReadFile(filepath.Join(src, "scanA/files.json")); string(b) != "recovered\n" {
		t.Fatalf("SOURCE after a write through the recovered mount: %q", b)
	}
	// The sitter still sees the dead mount.
	code, stderr, _ := runErr(t, "ls", fmt.Sprintf("/proc/%d/cwd/", sitter.Process.Pid))
	if code == 0 || !strings.Contains(stderr, "Transport endpoint is not connected") {
		t.Fatalf("ls of the sitter's working directory: exit %d, %s", code, stderr)
	}
}

// mountinfoLines returns the mounts on mount point mnt, one line each.
func mountinfoLines(mnt string) string {
	ms, _ := procfs.ReadMountinfo()
	var out strings.Builder
	for _, m := range ms {
		if m.MountPoint == mnt {
			fmt.Fprintf(&out, "%+v\n", m)
		}
	}
	return out.String()
}
