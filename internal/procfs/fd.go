package procfs

import (
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FD is one open descriptor of a process, from /proc/PID/fd.
type FD struct {
	Target string // the path the descriptor names, or "pipe:[N]", "socket:[N]"...
	// Deleted is set when the file was unlinked while open: the kernel
	// then appends " (deleted)" to the path, which Target lacks.
	Deleted bool
}

// ReadFDs returns the open descriptors of a process. Reading another
// user's needs privilege (ptrace access). Descriptors closed while the
// directory is read are left out.
func ReadFDs(pid int) ([]FD, error) {
	dir := pidDir(pid) + "/fd/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]FD, 0, len(entries))
	for _, e := range entries {
		target, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue
		}
		out = append(out, ParseFDTarget(target))
	}
	return out, nil
}

// ParseFDTarget reads the target of a /proc/PID/fd link.
func ParseFDTarget(target string) FD {
	if t, ok := strings.CutSuffix(target, " (deleted)"); ok && strings.HasPrefix(t, "/") {
		return FD{Target: t, Deleted: true}
	}
	return FD{Target: target}
}

// HasFDUnder reports whether process pid has a descriptor open on the
// directory dir (an absolute, clean path) or on a file below it.
func HasFDUnder(pid int, dir string) bool {
	fds, err := ReadFDs(pid)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if fd.Target == dir || strings.HasPrefix(fd.Target, dir+"/") {
			return true
		}
	}
	return false
}

// DeletedFile is a descriptor of a process on a file that was unlinked
// while it was open.
type DeletedFile struct {
	FD       int
	Path     string // the path the file had, without " (deleted)"
	Dev, Ino uint64 // the open file's identity
}

// DeletedFiles returns the descriptors of process pid on unlinked files
// whose former name ends in base (its last element). The identity comes
// from stat(2) on /proc/PID/fd/N, which reaches the open file whatever
// became of its name. Reading another user's descriptors needs privilege
// (ptrace access); descriptors closed meanwhile are left out.
func DeletedFiles(pid int, base string) ([]DeletedFile, error) {
	dir := pidDir(pid) + "/fd/"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []DeletedFile
	for _, e := range entries {
		target, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue
		}
		fd := ParseFDTarget(target)
		if !fd.Deleted || path.Base(fd.Target) != base {
			continue
		}
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(dir+e.Name(), &st) != nil {
			continue
		}
		out = append(out, DeletedFile{FD: n, Path: fd.Target, Dev: st.Dev, Ino: st.Ino})
	}
	return out, nil
}
