package fusefs

import (
	"strings"
	"syscall"
	"testing"

	"scanlockfs/internal/testutil"
	"scanlockfs/lockmgr"
)

func TestScanOfPath(t *testing.T) {
	long := strings.Repeat("s", lockmgr.MaxScanIDLen+1)
	cases := []struct {
		rel   string
		isDir bool
		want  string
	}{
		{"", true, ""},                 // the root
		{"scan_001", true, "scan_001"}, // a scan directory
		{"scan_001/images/a.jpg", false, "scan_001"},
		{"scan_001/images", true, "scan_001"},
		{"users.json", false, ""}, // root file
		{"romidb", false, ""},
		{".locks", true, ""}, // not a scan id
		{".hidden/f", false, ""},
		{long, true, ""},
		{long + "/f", false, ""},
		{".go-fuse.123/deleted", false, ""}, // orphaned node
	}
	for _, c := range cases {
		if got := scanOfPath(c.rel, c.isDir); got != c.want {
			t.Errorf("scanOfPath(%q, %v) = %q, want %q", c.rel, c.isDir, got, c.want)
		}
	}
}

func TestOpenMode(t *testing.T) {
	cases := []struct {
		flags uint32
		want  lockmgr.Mode
	}{
		{syscall.O_RDONLY, lockmgr.Shared},
		{syscall.O_RDONLY | syscall.O_NONBLOCK, lockmgr.Shared},
		{syscall.O_RDONLY | syscall.O_TRUNC, lockmgr.Exclusive},
		{syscall.O_RDONLY | syscall.O_APPEND, lockmgr.Exclusive},
		{syscall.O_WRONLY, lockmgr.Exclusive},
		{syscall.O_RDWR, lockmgr.Exclusive},
		{syscall.O_WRONLY | syscall.O_APPEND, lockmgr.Exclusive},
	}
	for _, c := range cases {
		if got := openMode(c.flags); got != c.want {
			t.Errorf("openMode(%#o) = %v, want %v", c.flags, got, c.want)
		}
	}
}

func TestHiddenName(t *testing.T) {
	if got := hiddenName("/data/db", "/data/db/.locks"); got != ".locks" {
		t.Errorf("got %q", got)
	}
	if got := hiddenName("/data/db/", "/data/db/.locks/"); got != ".locks" {
		t.Errorf("trailing slashes: got %q", got)
	}
	if got := hiddenName("/data/db", "/var/lock/db"); got != "" {
		t.Errorf("lock dir elsewhere: got %q", got)
	}
}

// bytesBuffer is a goroutine-safe buffer for log output.
type bytesBuffer struct{ testutil.Buffer }

func (b *bytesBuffer) contains(s string) bool { return strings.Contains(b.String(), s) }
