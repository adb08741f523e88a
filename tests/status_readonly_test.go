package tests

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// Nothing can be changed inside .locks: system calls fail with EROFS,
// real programs fail, and SOURCE, lock directory included, is unchanged.
func TestStatusViewIsReadOnly(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA"))
	w := startClient(t, "writer")
	w.mustOpen("w", d.path("scanA/files.json"), "w") // an active scan, so that its .info is listed
	w.send("write w data")
	if r := w.result("w"); r.kind != "ok" {
		t.Fatalf("write: %s", r.errno)
	}
	// The writer's .info file on SOURCE is written a moment after the
	// lock: wait for it, so that the tree stays the same from here on.
	for deadline := time.Now().Add(waitLimit); ; time.Sleep(2 * time.Millisecond) {
		if _, err := os.Stat(d.srcPath(".locks/scanA.info")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no .info file on SOURCE: %v", err)
		}
	}
	before := testutil.TreeSnapshot(t, d.src)
	info := d.statusPath("scanA.info")
	status := d.statusPath("status.json")
	// A .info file takes plantdb's writes (and drops them): see
	// TestPlantdbThroughMount.
	metrics := d.statusPath("metrics")
	dir := d.mnt + "/.locks"

	// As root without default_permissions every request reaches the
	// mount, which answers EROFS; renaming onto .locks itself is EPERM.
	for name, op := range map[string]func() error{
		"create":        func() error { return unix.Mknod(dir+"/new", unix.S_IFREG|0o644, 0) },
		"open O_CREAT":  func() error { return openClose(dir+"/new", unix.O_WRONLY|unix.O_CREAT) },
		"open O_WRONLY": func() error { return openClose(metrics, unix.O_WRONLY) },
		"open O_RDWR":   func() error { return openClose(status, unix.O_RDWR) },
		"open O_TRUNC":  func() error { return openClose(status, unix.O_RDONLY|unix.O_TRUNC) },
		"open O_APPEND": func() error { return openClose(status, unix.O_WRONLY|unix.O_APPEND) },
		"O_TMPFILE":     func() error { return openClose(dir, unix.O_WRONLY|unix.O_TMPFILE) },
		"truncate":      func() error { return unix.Truncate(info, 0) },
		"chmod file":    func() error { return unix.Chmod(info, 0o666) },
		"chmod dir":     func() error { return unix.Chmod(dir, 0o777) },
		"chown":         func() error { return unix.Chown(status, 1, 1) },
		"utimes":        func() error { return unix.UtimesNano(status, []unix.Timespec{{}, {}}) },
		"unlink":        func() error { return unix.Unlink(status) },
		"rename inside": func() error { return unix.Rename(status, dir+"/other.json") },
		"rename out":    func() error { return unix.Rename(info, d.path("scanA/stolen")) },
		"rename in":     func() error { return unix.Rename(d.path("scanA/files.json"), dir+"/scanA.info") },
		"mkdir":         func() error { return unix.Mkdir(dir+"/sub", 0o755) },
		"symlink":       func() error { return unix.Symlink("scanA", dir+"/link") },
		"link in":       func() error { return unix.Link(d.path("users.json"), dir+"/users.json") },
		"setxattr file": func() error { return unix.Setxattr(info, "user.x", []byte("1"), 0) },
		"setxattr dir":  func() error { return unix.Setxattr(dir, "user.x", []byte("1"), 0) },
		"removexattr":   func() error { return unix.Removexattr(status, "user.x") },
		"mkfifo":        func() error { return unix.Mkfifo(dir+"/fifo", 0o644) },
		"rename onto":   func() error { return unix.Rename(d.path("scanA"), dir) },
	} {
		want := unix.EROFS
		if name == "rename onto" {
			want = unix.EPERM
		}
		if err := op(); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	// Real programs.
	for _, args := range [][]string{
		{"sh", "-c", "echo x > " + status},
		{"sh", "-c", "echo x >> " + metrics},
		{"touch", dir + "/new"},
		{"rm", "-f", status},
		{"mv", d.path("users.json"), dir + "/"},
		{"cp", d.path("users.json"), dir + "/"},
		{"truncate", "-s", "0", info},
		{"mkdir", dir + "/sub"},
		{"ln", "-s", "x", dir + "/y"},
	} {
		if code, _, _ := runErr(t, args[0], args[1:]...); code == 0 {
			t.Errorf("%q succeeded", args)
		}
	}
	if after := testutil.TreeSnapshot(t, d.src); after != before {
		t.Errorf("SOURCE changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if ls := d.lsLocks(t); strings.Join(ls, " ") != "metrics scanA.info status.json" {
		t.Errorf(".locks after the attempts: %q", ls)
	}
	w.close("w")
}

func openClose(path string, flags int) error {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// The files of .locks have inode numbers of their own, stable from one
// stat to the next, distinct from each other and from every inode of
// the backing tree.
func TestStatusViewInodeNumbers(t *testing.T) {
	t.Parallel()
	d := mountT(t, scanDB(t, "scanA", "scanB"))
	ino := func(p string) uint64 {
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		return st.Ino
	}
	view := map[string]uint64{}
	for _, p := range []string{".locks", ".locks/status.json", ".locks/metrics", ".locks/scanA.info", ".locks/scanB.info"} {
		view[p] = ino(d.path(p))
	}
	seen := map[uint64]string{}
	for p, n := range view {
		if again := ino(d.path(p)); again != n {
			t.Errorf("%s: inode %d, then %d", p, n, again)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("%s and %s share inode %d", p, other, n)
		}
		seen[n] = p
	}
	err := filepath.WalkDir(d.mnt, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == d.mnt+"/.locks" {
			return filepath.SkipDir
		}
		if other, dup := seen[ino(p)]; dup {
			t.Errorf("%s has the inode of %s", p, other)
		}
		return nil
	})
	must(t, err)
	if len(seen) != 5 {
		t.Errorf("inodes: %v", seen)
	}
}
