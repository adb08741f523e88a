package fusefs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

func TestFindMountsInMountinfo(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "my db")
	noErr(t, os.Mkdir(src, 0o755))
	link := filepath.Join(dir, "link")
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
	mountinfo := []byte("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"45 27 0:42 / /mnt/a rw,nosuid,nodev,relatime - fuse.scanlockfs " + esc(src) + " rw,user_id=0\n" +
		"46 27 0:43 / /mnt/with\\040space rw,nosuid shared:7 master:2 - fuse.scanlockfs " + esc(src) + " rw\n" +
		"47 27 0:44 / /mnt/other rw - fuse.scanlockfs /elsewhere rw\n" +
		"48 27 0:45 / /mnt/loop rw - fuse.loopback " + esc(src) + " rw\n" +
		"garbage\n\n")
	for _, source := range []string{src, link, src + "/"} {
		got := findMounts(mountinfo, source)
		if want := []string{"/mnt/a", "/mnt/with space"}; !slices.Equal(got, want) {
			t.Errorf("findMounts(%q) = %q, want %q", source, got, want)
		}
	}
	if got := findMounts(mountinfo, dir); len(got) != 0 {
		t.Errorf("mounts of the parent directory: %q", got)
	}
}

// ReadMountStatus parses status.json; a read that does not return (a hung
// daemon, here a FIFO nobody writes) gives up with the context.
func TestReadMountStatus(t *testing.T) {
	mnt := t.TempDir()
	noErr(t, os.Mkdir(filepath.Join(mnt, statusDirName), 0o755))
	doc := renderMountStatus(MountStatus{Source: "/data/db", Mountpoint: mnt, PID: 42}, nil, nil, testNow)
	noErr(t, os.WriteFile(filepath.Join(mnt, statusDirName, statusJSONName), doc, 0o644))
	st, err := ReadMountStatus(context.Background(), mnt)
	if err != nil || st.PID != 42 || st.Source != "/data/db" || st.Scans == nil {
		t.Fatalf("ReadMountStatus: %+v, %v", st, err)
	}

	hung := t.TempDir()
	noErr(t, os.Mkdir(filepath.Join(hung, statusDirName), 0o755))
	fifo := filepath.Join(hung, statusDirName, statusJSONName)
	noErr(t, syscall.Mkfifo(fifo, 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ReadMountStatus(ctx, hung); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung read: %v, want the context's deadline", err)
	}
	// Let the reader go.
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	noErr(t, err)
	f.Close()

	if _, err := ReadMountStatus(context.Background(), t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("no mount: %v", err)
	}
}
