package procfs

import (
	"bytes"
	"os"
	"strconv"
)

// ParseSyscall reads /proc/PID/task/TID/syscall: the number of the
// system call the thread is blocked in ("NR ARGS... SP PC"), or ok false
// when it is running ("running") or not in a system call ("-1 SP PC").
func ParseSyscall(b []byte) (nr int, ok bool) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, false
	}
	nr, err := strconv.Atoi(string(f[0]))
	if err != nil || nr < 0 {
		return 0, false
	}
	return nr, true
}

// BlockedIn reports whether a thread of process pid is blocked in system
// call nr (reading /proc/PID/syscall of each thread needs ptrace access:
// root, or the process's own user without restrictions).
func BlockedIn(pid, nr int) bool {
	dir := pidDir(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + t.Name() + "/syscall")
		if err != nil {
			continue
		}
		if n, ok := ParseSyscall(b); ok && n == nr {
			return true
		}
	}
	return false
}
