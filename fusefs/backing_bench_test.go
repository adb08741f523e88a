package fusefs

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// The daemon-side cost of opening a backing file, without FUSE:
// go-fuse's loopback (open SOURCE, openat2 with RESOLVE_NO_SYMLINKS,
// close SOURCE) against backing.open plus the identity check and the
// O_NONBLOCK reset of node.openFile. And, for the decision not to run
// operations with the caller's credentials (doc.go), what switching
// would add per request: the caller's groups from /proc and six
// per-thread credential calls.

func benchSource(b *testing.B) (string, string) {
	src := b.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "scan_001", "images"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "scan_001", "images", "f"), []byte("x"), 0o644); err != nil {
		b.Fatal(err)
	}
	return src, "scan_001/images/f"
}

func BenchmarkOpenLoopbackPath(b *testing.B) {
	src, rel := benchSource(b)
	for b.Loop() {
		base, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		fd, err := unix.Openat2(base, rel, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
		unix.Close(base)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkOpenBacking(b *testing.B) {
	src, rel := benchSource(b)
	back, err := newBacking(src)
	if err != nil {
		b.Fatal(err)
	}
	fd, err := back.open(rel, unix.O_PATH, 0)
	if err != nil {
		b.Fatal(err)
	}
	st, btime, err := statx(fd, "", unix.AT_EMPTY_PATH)
	unix.Close(fd)
	if err != nil {
		b.Fatal(err)
	}
	want := back.stableAttr(&st, btime)
	for b.Loop() {
		fd, err := back.open(rel, backingFlags(syscall.O_RDONLY), 0)
		if err != nil {
			b.Fatal(err)
		}
		st, _, err := statx(fd, "", unix.AT_EMPTY_PATH)
		if err != nil || !back.isSame(&st, want) {
			b.Fatal("not the same inode", err)
		}
		if err := finishOpen(fd, syscall.O_RDONLY); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

func BenchmarkCallerCredentialSwitch(b *testing.B) {
	testutil.RequireRoot(b, "switching to the caller's credentials")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for b.Loop() {
		if _, err := os.ReadFile("/proc/self/status"); err != nil { // the caller's Groups:
			b.Fatal(err)
		}
		for _, id := range []uintptr{65534, 0} { // to the caller, and back
			unix.RawSyscall(unix.SYS_SETFSGID, id, 0, 0)
			unix.RawSyscall(unix.SYS_SETFSUID, id, 0, 0)
			gs := []uint32{uint32(id)}
			unix.RawSyscall(unix.SYS_SETGROUPS, 1, uintptr(unsafe.Pointer(&gs[0])), 0)
		}
	}
}

// A LOOKUP below the root, as READDIRPLUS makes one per entry: before
// node_dirfd.go, the directory resolved by path (openat2, statx for the
// inode check, statx of the name, close); now one statx relative to the
// directory's kept descriptor.
func BenchmarkLookupByDirPath(b *testing.B) {
	src, _ := benchSource(b)
	back, err := newBacking(src)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		dfd, err := back.open("scan_001/images", unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := statx(dfd, "", unix.AT_EMPTY_PATH); err != nil {
			b.Fatal(err)
		}
		if _, _, err := statx(dfd, "f", 0); err != nil {
			b.Fatal(err)
		}
		unix.Close(dfd)
	}
}

func BenchmarkLookupKeptDir(b *testing.B) {
	src, _ := benchSource(b)
	dfd, err := unix.Open(filepath.Join(src, "scan_001", "images"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dfd)
	var d dirFD
	d.fd, d.ok = dfd, true
	for b.Loop() {
		d.mu.RLock()
		_, _, err := statx(d.fd, "f", 0)
		d.mu.RUnlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}
