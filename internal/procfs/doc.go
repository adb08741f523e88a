// Package procfs parses the kernel's process and mount tables: one
// parser for each format scanlockfs reads, so that the quirks of each
// (a command name with spaces and parentheses, octal escapes in mount
// paths, a table produced a page at a time) are handled in one place and
// tested with hostile input. Nothing else in the module reads /proc: the
// processes' stat, status, comm, cmdline, fd, fdinfo (pidfds), maps,
// syscall, cwd and root; /proc/locks; mountinfo; and, for the
// benchmark's report, cpuinfo, meminfo and loadavg.
//
// Parse functions take the file's bytes and never panic on unexpected
// input: in a table (locks, mountinfo, maps) a malformed line is
// skipped; a malformed record (stat, status) is an error that wraps
// ErrFormat. Read functions read the file for a process id (or the
// calling process); a process that is gone gives an error for which
// errors.Is(err, fs.ErrNotExist) holds.
package procfs

import "strconv"

// procRoot is where proc is mounted.
const procRoot = "/proc"

// pidDir returns /proc/PID.
func pidDir(pid int) string { return procRoot + "/" + strconv.Itoa(pid) }
