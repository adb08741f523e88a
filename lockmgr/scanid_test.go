package lockmgr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidateScanID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"myscan_001", true},
		{"a", true},
		{"scan.v2", true},
		{"a..b", true},
		{"trailing.", true},
		{"with space", true},
		{"été-2024", true},
		{"-dash", true},
		{strings.Repeat("x", MaxScanIDLen), true},

		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"...", false},
		{"a/b", false},
		{"/abs", false},
		{"trailing/", false},
		{"../escape", false},
		{"nul\x00byte", false},
		{"\x00", false},
		{strings.Repeat("x", MaxScanIDLen+1), false},
	}
	for _, tt := range tests {
		err := ValidateScanID(tt.id)
		if tt.ok && err != nil {
			t.Errorf("ValidateScanID(%q) = %v, want nil", tt.id, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidScanID) {
			t.Errorf("ValidateScanID(%q) = %v, want ErrInvalidScanID", tt.id, err)
		}
	}
}

// snapshot lists every path under dir (recursively), so that a test can
// assert that nothing was created, removed or renamed.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		names = append(names, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestInvalidScanIDTouchesNothing(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "db")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, root, WithInfoDelay(0))
	before := snapshot(t, parent)
	bad := []string{"", ".", "..", ".hidden", "../db", "../../etc", "a/b", "x\x00y", strings.Repeat("y", 251)}
	o := testOwner("a")
	for _, id := range bad {
		calls := map[string]error{}
		_, calls["Acquire"] = m.Acquire(context.Background(), id, Exclusive, o)
		_, calls["TryAcquire"] = m.TryAcquire(id, Shared, o)
		_, calls["Status"] = m.Status(id)
		_, calls["ReadInfo"] = m.ReadInfo(id)
		for name, err := range calls {
			if !errors.Is(err, ErrInvalidScanID) {
				t.Errorf("%s(%q) = %v, want ErrInvalidScanID", name, id, err)
			}
		}
	}
	if after := snapshot(t, parent); !slices.Equal(before, after) {
		t.Errorf("invalid scan ids changed the disk:\nbefore %q\nafter  %q", before, after)
	}
	if st := m.Stats(); st.Scans != 0 || st.Holders != 0 {
		t.Errorf("invalid ids left state behind: %+v", st)
	}
}

// FuzzValidateScanID checks the promise that paths built from accepted
// ids stay directly inside the lock directory.
func FuzzValidateScanID(f *testing.F) {
	for _, s := range []string{"scan_001", "", ".", "..", "a/b", "x\x00", ".hid", strings.Repeat("z", 250)} {
		f.Add(s)
	}
	lockDir := "/srv/db/.locks"
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateScanID(id) != nil {
			return
		}
		switch {
		case strings.ContainsRune(id, '/'):
			t.Fatalf("accepted %q containing '/'", id)
		case strings.ContainsRune(id, 0):
			t.Fatalf("accepted %q containing NUL", id)
		case strings.HasPrefix(id, "."):
			t.Fatalf("accepted %q starting with '.'", id)
		case len(id) > MaxScanIDLen:
			t.Fatalf("accepted %d-byte id", len(id))
		case id == "":
			t.Fatal("accepted the empty id")
		}
		for _, suffix := range []string{".lock", ".info", ".gate"} {
			p := filepath.Join(lockDir, id+suffix)
			if filepath.Dir(p) != lockDir || filepath.Base(p) != id+suffix {
				t.Fatalf("id %q: %s is not directly inside %s", id, p, lockDir)
			}
			if len(id+suffix) > 255 {
				t.Fatalf("id %q: name longer than NAME_MAX", id)
			}
		}
	})
}
