package procfs

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FD is one open descriptor of a process, from /proc/PID/fd (or another
// link of /proc/PID that names a file: cwd, root, a mapped file).
type FD struct {
	Target string // the path the descriptor names, or "pipe:[N]", "socket:[N]"...
	// Deleted is set when the file was unlinked while open: the kernel
	// then appends " (deleted)" to the path, which Target lacks.
	Deleted bool
	// Num is the descriptor's number (ReadFDs); 0 for other links.
	Num int
}

// Link is the link as the kernel wrote it: Target, with " (deleted)"
// for a file unlinked while open.
func (fd FD) Link() string {
	if fd.Deleted {
		return fd.Target + " (deleted)"
	}
	return fd.Target
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
		num, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		target, err := os.Readlink(dir + e.Name())
		if err != nil {
			continue
		}
		fd := ParseFDTarget(target)
		fd.Num = num
		out = append(out, fd)
	}
	return out, nil
}

// ReadFD reads descriptor num of a process.
func ReadFD(pid, num int) (FD, error) {
	fd, err := readLink(pid, "fd/"+strconv.Itoa(num))
	fd.Num = num
	return fd, err
}

// ReadCwd reads the working directory of a process.
func ReadCwd(pid int) (FD, error) { return readLink(pid, "cwd") }

// ReadRoot reads the root directory of a process (chroot).
func ReadRoot(pid int) (FD, error) { return readLink(pid, "root") }

// readLink reads the link /proc/PID/name. These links are read without
// entering the file they name, so a hung FUSE server cannot hang them.
func readLink(pid int, name string) (FD, error) {
	target, err := os.Readlink(pidDir(pid) + "/" + name)
	if err != nil {
		return FD{}, err
	}
	return ParseFDTarget(target), nil
}

// SelfFDs returns the numbers of the calling process's open descriptors,
// without the one this call opens to list them.
func SelfFDs() ([]int, error) {
	return numbers(procRoot+"/self/fd", func(f *os.File) int { return int(f.Fd()) })
}

// ReadPidfdPid returns the process that pidfd num of process pid refers
// to, from /proc/PID/fdinfo/NUM: -1 once that process is gone.
func ReadPidfdPid(pid, num int) (int, error) {
	return readAs(pidDir(pid)+"/fdinfo/"+strconv.Itoa(num), ParsePidfdPid)
}

// ParsePidfdPid reads the "Pid:" line of a pidfd's fdinfo ("Pid:\t1234",
// -1 once the process is gone). fdinfo of other descriptors has none:
// ErrFormat.
func ParsePidfdPid(b []byte) (int, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("Pid:")); ok {
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || n < -1 {
				return 0, fmt.Errorf("fdinfo Pid %q: %w", v, ErrFormat)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no Pid line in fdinfo: %w", ErrFormat)
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
