package mountcmd

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// loopbackMain is the "loopbackfs SOURCE MOUNTPOINT READYFILE" program: a
// plain go-fuse loopback mount (no locking), so that unmount can be tested
// on a real FUSE mount served by another process. It creates READYFILE once
// the mount answers, and exits 0 when unmounted, or unmounts on SIGINT or
// SIGTERM.
//
// With LOOPBACK_USER_ID=UID (as root) it mounts on behalf of that user,
// the way fusermount3 does for a user (mount option user_id=UID): the user
// may then unmount it with fusermount3. This tests the unprivileged
// unmount where /dev/fuse is closed to users, as in many containers.
func loopbackMain() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: loopbackfs SOURCE MOUNTPOINT READYFILE")
		os.Exit(2)
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "loopbackfs:", err)
		os.Exit(1)
	}
	src, mnt := os.Args[1], os.Args[2]
	root, err := fs.NewLoopbackRoot(src)
	if err != nil {
		fail(err)
	}
	where := mnt
	opts := &fs.Options{MountOptions: fuse.MountOptions{FsName: src, Name: "loopbacktest"}}
	if uid := os.Getenv("LOOPBACK_USER_ID"); uid != "" {
		dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			fail(err)
		}
		data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%s,group_id=%s,allow_other", dev.Fd(), uid, uid)
		if err := unix.Mount(src, mnt, "fuse.loopbacktest", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
			fail(fmt.Errorf("mount %s: %w", mnt, err))
		}
		where = fmt.Sprintf("/dev/fd/%d", dev.Fd())
		opts.MountOptions.AllowOther = true
	}
	srv, err := fs.Mount(where, root, opts)
	if err != nil {
		fail(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		if where != mnt {
			_ = unix.Unmount(mnt, 0) // the server does not know the mount point
		} else {
			_ = srv.Unmount()
		}
	}()
	// Written aside and renamed, so that a waiter that sees the file
	// reads the pid (waitfile, then signal, raced the write under load).
	if err := os.WriteFile(os.Args[3]+".tmp", []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		fail(err)
	}
	if err := os.Rename(os.Args[3]+".tmp", os.Args[3]); err != nil {
		fail(err)
	}
	srv.Wait()
	os.Exit(0)
}

// TestUnmountAsUser takes the non-root path: scanlockfs run by the user
// who owns a FUSE mount must unmount it through fusermount3; a busy mount
// names the process in it, and --lazy detaches it.
func TestUnmountAsUser(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	testutil.RequireRoot(t, "to switch to an unprivileged user")
	const nobody = 65534
	// The test binary's own directories are private to root: copy it
	// where the unprivileged user can run it.
	dir, err := os.MkdirTemp("", "scanlockfs-unmount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detachMountsUnder(dir); os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	self, err := os.Executable()
	must(t, err)
	for _, name := range []string{"scanlockfs", "loopbackfs"} {
		must(t, copyFile(self, filepath.Join(dir, name), 0o755))
	}
	src, mnt := filepath.Join(dir, "src"), filepath.Join(dir, "mnt")
	for _, d := range []string{src, mnt, filepath.Join(dir, "run")} {
		must(t, os.Mkdir(d, 0o755))
		must(t, os.Chown(d, nobody, nobody))
	}
	asNobody := func(name string, args ...string) *exec.Cmd {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		c := exec.Command(name, args...)
		c.Dir = filepath.Join(dir, "run")
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		return c
	}
	ready := filepath.Join(dir, "run", "ready")
	mount := func() *bgProc {
		_ = os.Remove(ready)
		c := exec.Command(filepath.Join(dir, "loopbackfs"), src, mnt, ready)
		c.Env = append(os.Environ(), fmt.Sprintf("LOOPBACK_USER_ID=%d", nobody))
		c.Stderr = os.Stderr
		srv := startBg(t, c)
		waitForFile(t, ready, srv)
		return srv
	}

	srv := mount()
	// A process of the same user sits in the mount.
	bc := asNobody("/bin/sh", "-c", "cd "+mnt+" && echo in && exec sleep 600")
	out, err := bc.StdoutPipe()
	must(t, err)
	busy := startBg(t, bc)
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "in\n" {
		t.Fatalf("busy process did not enter the mount: %q", line)
	}

	res, code := runOut(asNobody("scanlockfs", "unmount", mnt))
	if code != ExitBusy {
		t.Fatalf("unmount of a busy mount as a user: exit %d, want %d (%s)", code, ExitBusy, res)
	}
	want := fmt.Sprintf("pid %d (sleep, user nobody): working directory %s", bc.Process.Pid, mnt)
	if !strings.Contains(res, want) || !strings.Contains(res, "--lazy") {
		t.Fatalf("busy report does not name the user process and --lazy:\n%s\nwant %q", res, want)
	}
	// Root's processes (this test among them) are not visible to it.
	if !regexp.MustCompile(`\(\d+ processes of other users could not be inspected; root can see them\)`).MatchString(res) {
		t.Fatalf("busy report does not say that other users' processes could not be inspected:\n%s", res)
	}
	if !isMountPoint(t, mnt) {
		t.Fatal("a refused unmount removed the mount")
	}

	res, code = runOut(asNobody("scanlockfs", "unmount", "--lazy", mnt))
	if code != ExitOK || isMountPoint(t, mnt) {
		t.Fatalf("lazy unmount as a user: exit %d, still mounted %v (%s)", code, isMountPoint(t, mnt), res)
	}
	_ = bc.Process.Kill()
	busy.wait(20 * time.Second)
	waitExit(t, srv, "loopback server after lazy unmount")

	// A mount of another user (root) cannot be unmounted by this one.
	_ = os.Remove(ready)
	rootSrv := startBg(t, exec.Command(filepath.Join(dir, "loopbackfs"), src, mnt, ready))
	waitForFile(t, ready, rootSrv)
	res, code = runOut(asNobody("scanlockfs", "unmount", mnt))
	if code != ExitMount || !strings.Contains(res, "only the user who mounted it, or root, can unmount it") {
		t.Fatalf("unmount of root's mount as a user: exit %d, want %d with a hint (%s)", code, ExitMount, res)
	}
	if !isMountPoint(t, mnt) {
		t.Fatal("a user unmounted root's mount")
	}
	must(t, rootSrv.cmd.Process.Signal(syscall.SIGTERM))
	waitExit(t, rootSrv, "root's loopback server after SIGTERM")

	// Not busy: a plain unmount through fusermount3.
	srv = mount()
	if res, code := runOut(asNobody("scanlockfs", "unmount", mnt)); code != ExitOK {
		t.Fatalf("unmount as a user: exit %d (%s)", code, res)
	}
	waitExit(t, srv, "loopback server after unmount")
	if res, code := runOut(asNobody("scanlockfs", "unmount", mnt)); code != ExitNotFound {
		t.Fatalf("second unmount: exit %d, want %d (%s)", code, ExitNotFound, res)
	}
}

// must fails t with err, if err is not nil.
var must = testutil.Must

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runOut runs c and returns its combined output and exit code.
func runOut(c *exec.Cmd) (string, int) {
	out, err := c.CombinedOutput()
	if err != nil && c.ProcessState == nil {
		return err.Error(), -1
	}
	return string(out), c.ProcessState.ExitCode()
}

// bgProc is a started process whose exit is watched.
type bgProc struct {
	cmd    *exec.Cmd
	done   chan error // receives Wait's result once
	err    error
	exited bool
}

// startBg starts c in a process group of its own, so that the cleanup
// also ends what c started (run's COMMAND) if a test fails half-way.
func startBg(t *testing.T, c *exec.Cmd) *bgProc {
	t.Helper()
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Setpgid = true
	must(t, c.Start())
	p := &bgProc{cmd: c, done: make(chan error, 1)}
	go func() { p.done <- c.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		p.wait(20 * time.Second)
	})
	return p
}

// wait returns whether the process exited within d.
func (p *bgProc) wait(d time.Duration) bool {
	if p.exited {
		return true
	}
	select {
	case p.err = <-p.done:
		p.exited = true
	case <-time.After(d):
	}
	return p.exited
}

// waitForFile waits until f exists, failing early if p exits first.
func waitForFile(t *testing.T, f string, p *bgProc) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(f); err == nil {
			return
		}
		if p.wait(5 * time.Millisecond) {
			t.Fatalf("%s exited (%v) before creating %s", p.cmd.Path, p.err, f)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 20s", f)
		}
	}
}

func waitExit(t *testing.T, p *bgProc, what string) {
	t.Helper()
	if !p.wait(20 * time.Second) {
		t.Fatalf("%s did not exit within 20s", what)
	}
	if p.err != nil {
		t.Fatalf("%s: %v", what, p.err)
	}
}

func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	mounts, err := readMountinfo()
	must(t, err)
	return findMount(mounts, p) != nil
}

// TestHiddenNoteAsRoot: what root cannot inspect is named with the reason
// (another user namespace, a security module), five at most.
func TestHiddenNoteAsRoot(t *testing.T) {
	var hidden []mountUser
	for pid := 1; pid <= 7; pid++ {
		hidden = append(hidden, mountUser{pid: pid, command: fmt.Sprintf("p%d", pid)})
	}
	if got := hiddenNote(hidden, false); got != "\n  (7 processes of other users could not be inspected; root can see them)" {
		t.Errorf("hiddenNote(7 processes, user) = %q", got)
	}
	got := hiddenNote(hidden[:1], true)
	want := "\n  (not inspected, so not known to be using it: pid 1 (p1): /proc refuses even root their open files, " +
		"as for processes of another user namespace (a container) or protected by a security module)"
	if got != want {
		t.Errorf("hiddenNote(1 process, root) =\n%q\nwant\n%q", got, want)
	}
	got = hiddenNote(hidden, true)
	if !strings.Contains(got, "pid 5 (p5) and 2 more: ") || strings.Contains(got, "pid 6") {
		t.Errorf("hiddenNote(7 processes, root) = %q, want five named and 2 more", got)
	}
	if got := hiddenNote(nil, true); got != "" {
		t.Errorf("hiddenNote(none) = %q, want nothing", got)
	}
}

// detachMountsUnder lazily unmounts every mount under dir, last first.
func detachMountsUnder(dir string) {
	mounts, err := readMountinfo()
	if err != nil {
		return
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if strings.HasPrefix(mounts[i].point, dir+string(filepath.Separator)) {
			if unix.Unmount(mounts[i].point, unix.MNT_DETACH) != nil {
				_ = exec.Command("fusermount3", "-uz", mounts[i].point).Run()
			}
		}
	}
}
