package fusefs

import (
	"context"
	"slices"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// listStream is a loopback-like directory stream whose offsets are
// cookies, as a backing file system's are.
type listStream struct {
	entries []fuse.DirEntry
	i       int
}

func (l *listStream) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if l.i >= len(l.entries) {
		return nil, 0
	}
	e := l.entries[l.i]
	l.i++
	return &e, 0
}

// Seekdir positions after the entry whose offset is off (0: the start).
func (l *listStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		l.i = 0
		return 0
	}
	for i, e := range l.entries {
		if e.Off == off {
			l.i = i + 1
			return 0
		}
	}
	return syscall.EINVAL
}

func readNames(t *testing.T, d fs.FileReaddirenter) []string {
	t.Helper()
	var names []string
	for {
		e, errno := d.Readdirent(context.Background())
		if errno != 0 {
			t.Fatal(errno)
		}
		if e == nil {
			return names
		}
		names = append(names, e.Name)
	}
}

// The root listing shows the status view once, first, never the real
// lock directory, and seeking (rewinddir, seekdir to a telldir cookie)
// neither loses nor repeats entries.
func TestRootListingShowsStatusViewOnce(t *testing.T) {
	inner := &listStream{entries: []fuse.DirEntry{
		{Name: ".", Off: 0x11}, {Name: "..", Off: 0x22}, {Name: ".locks", Off: 0x33},
		{Name: "scanA", Off: 0x44}, {Name: "old-locks", Off: 0x55}, {Name: "users.json", Off: 0x66},
	}}
	e := statusDirEntry()
	d := &filteredDir{inner: inner, hide: []string{".locks", "old-locks"}, extra: &e}
	want := []string{".locks", ".", "..", "scanA", "users.json"}
	if got := readNames(t, d); !slices.Equal(got, want) {
		t.Fatalf("listing %q, want %q", got, want)
	}
	ctx := context.Background()
	if errno := d.Seekdir(ctx, 0); errno != 0 {
		t.Fatal(errno)
	}
	first, _ := d.Readdirent(ctx)
	if first == nil || first.Name != statusDirName || first.Off != extraOff || first.Ino != statusDirIno {
		t.Fatalf("after rewind: %+v", first)
	}
	if got := readNames(t, d); !slices.Equal(got, want[1:]) {
		t.Fatalf("after the status view: %q", got)
	}
	// The offset of the status view's entry resumes with the backing
	// directory's first entry.
	if errno := d.Seekdir(ctx, extraOff); errno != 0 {
		t.Fatal(errno)
	}
	if got := readNames(t, d); !slices.Equal(got, want[1:]) {
		t.Fatalf("seek to extraOff: %q", got)
	}
	// A backing cookie resumes after that entry, without the view again.
	if errno := d.Seekdir(ctx, 0x44); errno != 0 {
		t.Fatal(errno)
	}
	if got := readNames(t, d); !slices.Equal(got, []string{"users.json"}) {
		t.Fatalf("seek to scanA's cookie: %q", got)
	}
}

// Inode numbers of .info files are stable per scan and distinct between
// scans, in the reserved range.
func TestInfoInodeNumbers(t *testing.T) {
	v := newStatusView("/src", "/mnt")
	a, b := v.infoIno("scanA"), v.infoIno("scanB")
	if a == b || v.infoIno("scanA") != a || v.infoIno("scanB") != b {
		t.Fatalf("scanA %d, scanB %d, again %d %d", a, b, v.infoIno("scanA"), v.infoIno("scanB"))
	}
	for _, ino := range []uint64{a, b, statusDirIno, statusJSONIno, metricsIno} {
		if ino < statusInoBase || ino == ^uint64(0) {
			t.Errorf("inode %#x outside the reserved range", ino)
		}
	}
	if a < firstInfoIno || b < firstInfoIno {
		t.Errorf(".info inodes %#x %#x overlap the fixed ones", a, b)
	}
}
