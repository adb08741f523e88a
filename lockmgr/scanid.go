package lockmgr

import (
	"fmt"
	"strings"
)

// MaxScanIDLen is the longest scan id accepted, in bytes. It leaves room
// for the ".lock"/".info" suffixes within the 255-byte NAME_MAX.
const MaxScanIDLen = 250

// ValidateScanID reports whether id can name a scan. It is called before
// any path is built from id, so a path built from a valid id always stays
// inside the lock directory.
func ValidateScanID(id string) error {
	var why string
	switch {
	case id == "":
		why = "empty"
	case len(id) > MaxScanIDLen:
		why = fmt.Sprintf("longer than %d bytes", MaxScanIDLen)
	case id == "." || id == "..":
		why = "a dot directory"
	case strings.HasPrefix(id, "."):
		why = "starts with '.'"
	case strings.ContainsRune(id, '/'):
		why = "contains '/'"
	case strings.ContainsRune(id, 0):
		why = "contains NUL"
	default:
		return nil
	}
	return fmt.Errorf("%w %q: %s", ErrInvalidScanID, truncateForError(id), why)
}

// truncateForError keeps hostile ids from flooding logs.
func truncateForError(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
