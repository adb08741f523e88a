package procfs

import (
	"os"
	"strings"
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
