package fusefs

import (
	"path/filepath"
	"strings"
	"testing"

	"scanlockfs/lockmgr"
)

// FuzzScanOfPath checks the mapping from a path under the mount to the
// scan whose lock it takes, for any path the kernel could hand us: the
// scan is the first component or nothing; a scan is always a valid scan
// id, so the lock, info and gate files built from it are directly inside
// the lock directory (no path built from a name under the mount leaves
// SOURCE/.locks); a file at the root belongs to no scan; and the answer
// depends on the path alone.
func FuzzScanOfPath(f *testing.F) {
	for _, s := range []string{"scanA/files.json", "scanA", "users.json", ".locks/x.lock", "a/b/c/d"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	const lockDir = "/srv/db/.locks"
	f.Fuzz(func(t *testing.T, rel string, isDir bool) {
		scan := scanOfPath(rel, isDir)
		if again := scanOfPath(rel, isDir); again != scan {
			t.Fatalf("scanOfPath(%q, %v) gave %q, then %q", rel, isDir, scan, again)
		}
		first, _, inside := strings.Cut(rel, "/")
		switch {
		case scan == "":
			// No lock: fine for anything. But a valid first component of a
			// path inside it, or of a directory, must be a scan.
			if (inside || isDir) && rel != "" && lockmgr.ValidateScanID(first) == nil {
				t.Fatalf("scanOfPath(%q, %v): no scan, but %q is a valid scan id", rel, isDir, first)
			}
			return
		case scan != first:
			t.Fatalf("scanOfPath(%q, %v) = %q, not the first component %q", rel, isDir, scan, first)
		case !inside && !isDir:
			t.Fatalf("scanOfPath(%q, false) = %q: a file at the root belongs to no scan", rel, scan)
		}
		if err := lockmgr.ValidateScanID(scan); err != nil {
			t.Fatalf("scanOfPath(%q, %v) = %q, an invalid scan id: %v", rel, isDir, scan, err)
		}
		for _, suffix := range []string{".lock", ".info", ".gate"} {
			p := filepath.Join(lockDir, scan+suffix)
			if filepath.Dir(p) != lockDir || filepath.Base(p) != scan+suffix {
				t.Fatalf("scan %q of %q: %s is not directly inside %s", scan, rel, p, lockDir)
			}
		}
	})
}
