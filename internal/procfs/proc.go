package procfs

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// PIDs returns the processes in /proc (this pid namespace's, as far as
// proc is mounted for it), in directory order.
func PIDs() ([]int, error) {
	return numbers(procRoot, func(*os.File) int { return 0 })
}

// OwnerUID returns the user that /proc shows as owning a process (its
// effective user; root for a process that is not dumpable).
func OwnerUID(pid int) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(pidDir(pid), &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: pidDir(pid), Err: err}
	}
	return st.Uid, nil
}

// HasThread reports whether thread tid belongs to process tgid now (a
// stat of /proc/TGID/task/TID, a few µs: cheaper than reading
// /proc/TID/status). A reused thread id in another process is not in
// tgid's task directory.
func HasThread(tgid, tid int) bool {
	var st unix.Stat_t
	return tgid > 0 && unix.Stat(pidDir(tgid)+"/task/"+strconv.Itoa(tid), &st) == nil
}

// ReadCmdline returns the arguments of a process (/proc/PID/cmdline);
// none for a kernel thread or a zombie.
func ReadCmdline(pid int) ([]string, error) {
	return readAs(pidDir(pid)+"/cmdline", func(b []byte) ([]string, error) { return ParseCmdline(b), nil })
}

// ParseCmdline splits the contents of /proc/PID/cmdline: arguments each
// ended by a NUL. A process may rewrite its arguments, so the last one
// may lack its NUL, and one may hold spaces or be empty.
func ParseCmdline(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}
