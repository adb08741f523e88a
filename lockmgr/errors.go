package lockmgr

import "errors"

// Sentinel errors. Every error returned by this package that has one of
// these causes wraps it, so callers test with errors.Is.
var (
	// ErrInvalidScanID: the scan id is empty, contains '/' or NUL, is "." or
	// "..", starts with '.', or is longer than MaxScanIDLen bytes. Nothing
	// on disk was touched.
	ErrInvalidScanID = errors.New("invalid scan id")

	// ErrTimeout: the lock was not granted before the deadline (the
	// context's, or the manager's default timeout).
	ErrTimeout = errors.New("timed out waiting for scan lock")

	// ErrWouldBlock: a non-blocking request could not be granted at once.
	ErrWouldBlock = errors.New("scan lock is busy")

	// ErrDeadlock: the request would wait forever on another owner that
	// waits on this one (two shared holders both asking for exclusive).
	ErrDeadlock = errors.New("scan lock upgrade would deadlock")

	// ErrClosed: the manager was closed.
	ErrClosed = errors.New("lock manager is closed")

	// ErrNotHeld: the lease was already released (a double release is a
	// bug in the caller).
	ErrNotHeld = errors.New("scan lock is not held")

	// ErrRoot: the scan root is missing, not a directory or not writable.
	ErrRoot = errors.New("unusable scan root")

	// ErrLockFile: a lock file or the lock directory cannot be used (for
	// example a directory where a lock file should be, or no permission).
	ErrLockFile = errors.New("unusable lock file")

	// ErrReadOnly: the manager was opened WithReadOnly, for status only;
	// it takes no lock.
	ErrReadOnly = errors.New("lock manager is read-only")
)
