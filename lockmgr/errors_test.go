package lockmgr

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The errors of New wrap the OS cause as well as the sentinel, so that
// callers can tell a missing root from a permission problem with
// errors.Is.
func TestNewWrapsOSCause(t *testing.T) {
	_, err := New(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, ErrRoot) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing root: %v, want ErrRoot wrapping fs.ErrNotExist", err)
	}
	// A read-only tmpfs as root (EROFS), a mode-0555 directory otherwise
	// (EACCES, fs.ErrPermission).
	_, err = New(readOnlyDir(t))
	if !errors.Is(err, ErrRoot) || !(errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.EROFS)) {
		t.Errorf("read-only root: %v, want ErrRoot wrapping the OS cause", err)
	}
}
