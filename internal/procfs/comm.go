package procfs

import (
	"os"
	"strings"
)

// ReadComm returns the command name of a process (/proc/PID/comm).
func ReadComm(pid int) (string, error) {
	b, err := os.ReadFile(pidDir(pid) + "/comm")
	if err != nil {
		return "", err
	}
	return ParseComm(b), nil
}

// ParseComm returns the command name in the contents of
// /proc/PID/comm: the file minus the one newline the kernel appends. The
// name is what the program chose (prctl(PR_SET_NAME)); it may hold
// spaces, newlines and any other byte but NUL, so it is only shown,
// never parsed, and callers that print it escape it.
func ParseComm(b []byte) string {
	return strings.TrimSuffix(string(b), "\n")
}
