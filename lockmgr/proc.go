package lockmgr

import (
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// procLock is one line of /proc/locks, in lockmgr's terms.
type procLock struct {
	kind    string // FLOCK, POSIX, OFDLCK, ...
	mode    Mode
	pid     int
	file    fileID
	blocked bool   // a "->" line: a blocked request
	start   uint64 // first byte of a POSIX or OFD lock
}

// readProcLocks reads /proc/locks (procfs.ReadLocks: a hint while locks
// change, callers de-duplicate).
func readProcLocks() ([]procLock, error) {
	ls, err := procfs.ReadLocks()
	if err != nil {
		return nil, err
	}
	return procLocks(ls), nil
}

// parseProcLocks parses the contents of /proc/locks.
func parseProcLocks(data []byte) []procLock {
	return procLocks(procfs.ParseLocks(data))
}

func procLocks(ls []procfs.Lock) []procLock {
	out := make([]procLock, 0, len(ls))
	for _, l := range ls {
		pl := procLock{kind: l.Kind, mode: Shared, pid: l.PID, blocked: l.Blocked, start: l.Start,
			file: fileID{dev: unix.Mkdev(l.Major, l.Minor), ino: l.Inode}}
		if l.Write {
			pl.mode = Exclusive
		}
		out = append(out, pl)
	}
	return out
}

// procComm returns the command name of a process, or "" if it is gone.
func procComm(pid int) string {
	c, _ := procfs.ReadComm(pid)
	return c
}
