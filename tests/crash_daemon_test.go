package tests

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
	"scanlockfs/mountcmd"
)

// The crash matrix, part 2: the daemon killed with SIGKILL while clients
// hold files and wait for scans.
//
//   - A client waiting for a scan gets an error (the kernel aborts the
//     connection: ECONNABORTED, or ENOTCONN), not a hang; new opens get
//     ENOTCONN at once.
//   - The flocks the daemon held on SOURCE die with it: a direct lockmgr
//     user and a plantdb peer get those scans at once.
//   - A client holding a file: without passthrough its reads and writes
//     fail (ENOTCONN). With passthrough (the default as root) the kernel
//     keeps serving them from the backing file, without any lock: the
//     daemon is gone. That is the kernel's behaviour and a documented
//     hazard: after a crash, stop the programs that had files open
//     (scanlockfs unmount lists them) before others write.
//   - `scanlockfs mount` refuses the dead mount point (exit 5, saying how
//     to recover); `scanlockfs mount --recover` clears it and mounts, and
//     removes the stale .info files the dead daemon left.
func TestCrashDaemonKilled(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		passthrough bool
	}{{"passthrough", true}, {"no passthrough", false}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := scanDB(t, "scanA", "scanB")
			flags := []string{"--log-level", "debug"}
			if !c.passthrough {
				flags = append(flags, "--no-passthrough")
			}
			d := mountT(t, src, flags...)
			d.allowExit = true
			writer := startWriter(t, d.path("scanA/files.json"))
			reader := startClient(t, "reader")
			reader.mustOpen("r", d.path("scanB/files.json"), "r")
			waiter := startClient(t, "waiter")
			waiter.open("q", d.path("scanA/files.json"), "r")
			d.waitQueued(t, waiter.pid())
			// The daemon's .info names it (it has held scanA long enough).
			waitInfo(t, d.srcPath(".locks/scanA.info"), d.cmd.Process.Pid)

			killed := kill(t, d.cmd.Process)
			d.waitExit(t)

			// The waiter gets an error, after the kill.
			r := waiter.result("q")
			if r.kind != "err" || (r.errno != "ECONNABORTED" && r.errno != "ENOTCONN") || r.at < killed {
				t.Fatalf("waiting open after the daemon was killed: %+v, want ECONNABORTED or ENOTCONN", r)
			}
			// New opens fail at once.
			late := startClient(t, "late")
			late.open("n", d.path("scanB/files.json"), "r")
			if r := late.result("n"); r.kind != "err" || r.errno != "ENOTCONN" {
				t.Fatalf("open on the dead mount: %+v, want ENOTCONN", r)
			}
			// The holders' reads and writes.
			writer.send("write w written after the crash")
			wr := writer.result("w")
			reader.send("read r")
			rr := reader.result("r")
			if c.passthrough {
				if wr.kind != "ok" || rr.kind != "ok" {
					t.Fatalf("passthrough I/O after the crash: write %+v, read %+v (the kernel used to keep serving it)", wr, rr)
				}
				if b, _ := os.ReadFile(d.srcPath("scanA/files.json")); string(b) != "written after the crash" {
					t.Fatalf("passthrough write after the crash: SOURCE has %q", b)
				}
			} else {
				for _, res := range []reply{wr, rr} {
					if res.kind != "err" || (res.errno != "ENOTCONN" && res.errno != "ECONNABORTED") {
						t.Fatalf("I/O without passthrough after the crash: %+v, want ENOTCONN", res)
					}
				}
			}
			// Closing returns (FLUSH fails with ENOTCONN).
			for _, h := range []struct {
				c  *client
				id string
			}{{writer, "w"}, {reader, "r"}} {
				h.c.send("close %s", h.id)
				h.c.await(h.id, false)
				h.c.result(h.id)
			}

			// The dead daemon's flocks are gone: direct users get the scans.
			for _, scan := range []string{"scanA", "scanB"} {
				if st := lockState(t, src, scan); st.State != "free" {
					t.Fatalf("%s is %s after the daemon died: %+v", scan, st.State, st.Holders)
				}
			}
			direct := startClient(t, "direct")
			direct.send("try T %s scanA exclusive", src)
			if r := direct.result("T"); r.kind != "ok" {
				t.Fatalf("direct lockmgr user after the crash: %s", r.errno)
			}
			direct.send("unlock T")
			direct.result("T")
			peer := startPython(t, "plantdb", nil, plantdbPeer(t), "hold", src, "scanB", "--mode", "exclusive", "--timeout", "5")
			peer.expect("granted")
			peer.send("")
			peer.expect("released")
			must(t, peer.wait())

			// status reads the dead daemon's .info without trouble.
			code, out, errOut := runCode(t, binScanlockfs, "status", src, "scanA")
			if code != 0 || !strings.Contains(out, "free") {
				t.Fatalf("status after the crash: exit %d\n%s%s", code, out, errOut)
			}

			// mount refuses the dead mount point and says how to recover.
			code, _, errOut = runCode(t, binScanlockfs, "mount", src, d.mnt)
			if code != mountcmd.ExitMount || !strings.Contains(errOut, "--recover") {
				t.Fatalf("mount on the dead mount point: exit %d, %s", code, errOut)
			}
			// --recover clears it and mounts again; stale .info files go.
			d2 := mountOn(t, src, d.mnt, "--recover", "--log-level", "debug")
			base := d2.leakBaseline(t)
			if _, err := os.Stat(d.srcPath(".locks/scanA.info")); !os.IsNotExist(err) {
				t.Fatalf("the dead daemon's .info survived the recovering mount: %v", err)
			}
			w := startClient(t, "writer after recovery")
			w.openHolding("w", d2.path("scanA/files.json"), "wt", src, "scanA", "exclusive")
			w.close("w")
			waitFree(t, src, "scanA")
			d2.checkNoLeaks(t, base)
			d2.stopNoLeaks(t)
		})
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
	// timeout before it asks the dead server.
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(d.mnt)
		if errors.Is(err, syscall.ENOTCONN) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat of the mount after SIGKILL: %v, want ENOTCONN", err)
		}
	}
	t.Cleanup(func() { detachMount(d.mnt) })
}

// A stale mount point (daemon gone) is named with the fix.
func TestStaleMountpointIsExplained(t *testing.T) {
	t.Parallel()
	src := scanDB(t, "scanA")
	d := mountT(t, src)
	killServer(t, d)
	code, stderr, _ := runErr(t, binScanlockfs, "mount", src, d.mnt)
	if code != mountcmd.ExitMount || !strings.Contains(stderr, "fusermount3 -u") {
		t.Fatalf("mount on a dead mount: exit %d, %s", code, stderr)
	}
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
	w.openHolding("w", d.path("scanA/files.json"), "w", src, "scanA", "exclusive")
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

	d2 := mountOn(t, src, d.mnt, "--recover")
	if !strings.Contains(d2.stderr.String(), "unmounted a dead mount") {
		t.Errorf("the log does not say that the dead mount was unmounted:\n%s", d2.stderr)
	}
	if got := run(t, "cat", d2.path("scanA/files.json")); got != "files of scanA\n" {
		t.Fatalf("cat through the recovered mount: %q", got)
	}
	r := startClient(t, "reader")
	r.openHolding("r", d2.path("scanA/files.json"), "r", src, "scanA", "shared")
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
	startWriter(t, d.path("scanA/files.json")) // holds scanA when the server dies
	sitter := newProgram("sleep", "600")
	sitter.cmd.Dir = d.mnt
	sitter.start(t)
	killServer(t, d)

	d2 := mountOn(t, src, d.mnt, "--recover")
	if !strings.Contains(d2.stderr.String(), "detached a dead mount") {
		t.Errorf("the log does not say that the busy dead mount was detached:\n%s", d2.stderr)
	}
	// The killed server's exclusive lock died with it.
	waitFree(t, src, "scanA")
	run(t, "sh", "-c", "echo recovered > "+d2.path("scanA/files.json"))
	if b, _ := os.ReadFile(d2.srcPath("scanA/files.json")); string(b) != "recovered\n" {
		t.Fatalf("SOURCE after a write through the recovered mount: %q", b)
	}
	// The sitter still sees the dead mount.
	code, stderr, _ := runErr(t, "ls", fmt.Sprintf("/proc/%d/cwd/", sitter.cmd.Process.Pid))
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
