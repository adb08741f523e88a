package fusefs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// backing.open follows no symlink in any component, with openat2 in one
// call, in pieces (paths longer than maxResolve) and by the O_NOFOLLOW walk
// of kernels without openat2; a trailing symlink is opened itself only
// with O_PATH|O_NOFOLLOW.
func TestBackingOpenFollowsNoSymlink(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{src + "/scan/a/b", outside + "/b"} {
		noErr(t, os.MkdirAll(d, 0o755))
	}
	for _, f := range []string{src + "/scan/a/b/f", outside + "/b/f", outside + "/secret"} {
		noErr(t, os.WriteFile(f, []byte(f), 0o644))
	}
	noErr(t, os.Symlink(outside, src+"/scan/dirlink"))
	noErr(t, os.Symlink(outside+"/secret", src+"/scan/a/b/filelink"))
	// SOURCE itself through a symlink of the configuration is fine.
	noErr(t, os.Symlink(src, dir+"/srclink"))
	b, err := newBacking(dir + "/srclink")
	noErr(t, err)
	if b.path != src {
		t.Fatalf("SOURCE resolved to %s, want %s", b.path, src)
	}

	cases := []struct {
		rel   string
		flags int
		ok    bool
	}{
		{"scan/a/b/f", unix.O_RDONLY, true},
		{"", unix.O_PATH | unix.O_DIRECTORY, true},
		{"scan/dirlink/b/f", unix.O_RDONLY, false},              // middle component
		{"scan/dirlink", unix.O_PATH | unix.O_DIRECTORY, false}, // a directory's place
		{"scan/a/b/filelink", unix.O_RDONLY, false},             // final component
		{"scan/a/b/filelink", unix.O_WRONLY | unix.O_TRUNC, false},
		{"scan/a/b/filelink", unix.O_PATH | unix.O_NOFOLLOW, true}, // the link itself
	}
	defer func(old int) { maxResolve = old }(maxResolve)
	for _, mode := range []struct {
		name    string
		max     int
		openat2 bool
	}{{"openat2", maxResolve, true}, {"pieces", 10, true}, {"walk", maxResolve, false}} {
		maxResolve = mode.max
		openat2Works.Store(mode.openat2)
		for _, c := range cases {
			fd, err := b.open(c.rel, c.flags, 0)
			if (err == nil) != c.ok {
				t.Errorf("%s: open %q: %v, want ok=%v", mode.name, c.rel, err, c.ok)
			}
			if err != nil {
				continue
			}
			st, _, err := statx(fd, "", unix.AT_EMPTY_PATH)
			unix.Close(fd)
			noErr(t, err)
			var want unix.Stat_t
			noErr(t, unix.Lstat(filepath.Join(src, c.rel), &want))
			if st.Ino != want.Ino {
				t.Errorf("%s: open %q reached inode %d, want %d", mode.name, c.rel, st.Ino, want.Ino)
			}
		}
	}
	openat2Works.Store(true)
	if content, _ := os.ReadFile(outside + "/secret"); string(content) != outside+"/secret" {
		t.Fatalf("the outside file changed: %q", content)
	}
}
