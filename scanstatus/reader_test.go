package scanstatus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"scanlockfs/internal/procfs"
)

// The scanlockfs mounts of SOURCE are found by any name of SOURCE, with
// the kernel's escapes undone; other types and sources are not.
func TestMountsOfSource(t *testing.T) {
	src := filepath.Join(t.TempDir(), "my db")
	link := filepath.Join(filepath.Dir(src), "link")
	noErr(t, os.Mkdir(src, 0o755))
	noErr(t, os.Symlink(src, link))
	esc := func(p string) string { // as the kernel writes it
		b := []byte{}
		for _, c := range []byte(p) {
			if c == ' ' {
				b = append(b, `\040`...)
			} else {
				b = append(b, c)
			}
		}
		return string(b)
	}
	mounts := procfs.ParseMountinfo([]byte("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"45 27 0:42 / /mnt/a rw,nosuid,nodev,relatime - fuse.scanlockfs " + esc(src) + " rw,user_id=0\n" +
		"46 27 0:43 / /mnt/with\\040space rw,nosuid shared:7 master:2 - fuse.scanlockfs " + esc(src) + " rw\n" +
		"47 27 0:44 / /mnt/other rw - fuse.scanlockfs /elsewhere rw\n" +
		"48 27 0:45 / /mnt/loop rw - fuse.loopback " + esc(src) + " rw\n" +
		"garbage\n\n"))
	for _, source := range []string{src, link, src + "/"} {
		got := mountsOf(mounts, source)
		if want := []string{"/mnt/a", "/mnt/with space"}; !slices.Equal(got, want) {
			t.Errorf("mountsOf(%q) = %q, want %q", source, got, want)
		}
	}
	if got := mountsOf(mounts, filepath.Dir(src)); len(got) != 0 {
		t.Errorf("mounts of the parent directory: %q", got)
	}
	// This process's own table holds no scanlockfs mount of a new directory.
	if got, err := FindMounts(src); err != nil || len(got) != 0 {
		t.Errorf("FindMounts(%s) = %q, %v", src, got, err)
	}
}

// ReadMount decodes what the daemon writes; a read that does not return
// (a hung daemon, here a FIFO nobody writes) gives up when the context
// ends.
func TestReadMount(t *testing.T) {
	mnt := t.TempDir()
	noErr(t, os.Mkdir(filepath.Join(mnt, ViewDir), 0o755))
	doc := renderMount(MountDoc{Source: "/data/db", Mountpoint: mnt, PID: 42}, nil, nil, testNow)
	noErr(t, os.WriteFile(filepath.Join(mnt, ViewDir, MountDocName), doc, 0o644))
	st, err := ReadMount(context.Background(), mnt)
	if err != nil || st.PID != 42 || st.Source != "/data/db" || st.Scans == nil || !st.GeneratedAt.Equal(testNow) {
		t.Fatalf("ReadMount: %+v, %v", st, err)
	}

	noErr(t, os.WriteFile(filepath.Join(mnt, ViewDir, MountDocName), []byte(`{"generated_at": "noon"}`), 0o644))
	if _, err := ReadMount(context.Background(), mnt); err == nil {
		t.Error("a document with a bad time decoded")
	}

	hung := t.TempDir()
	noErr(t, os.Mkdir(filepath.Join(hung, ViewDir), 0o755))
	fifo := filepath.Join(hung, ViewDir, MountDocName)
	noErr(t, syscall.Mkfifo(fifo, 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ReadMount(ctx, hung); !errors.Is(err, context.Canceled) {
		t.Fatalf("hung read: %v, want the context's end", err)
	}
	// Let the reader go.
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	noErr(t, err)
	f.Close()

	if _, err := ReadMount(context.Background(), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no mount: %v", err)
	}
}
