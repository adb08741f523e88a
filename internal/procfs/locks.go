package procfs

import (
	"bytes"
	"strconv"
)

// Lock is one line of /proc/locks.
type Lock struct {
	Kind    string // FLOCK, POSIX, OFDLCK, LEASE...
	Write   bool   // WRITE (exclusive); false for READ (shared)
	PID     int    // the holder's (or waiter's) process; -1 for OFD locks
	Major   uint32 // device of the locked file
	Minor   uint32
	Inode   uint64
	Start   uint64 // first byte of a POSIX or OFD lock's range (0 for flocks)
	Blocked bool   // a "->" line: a request waiting for the lock above it
}

// ReadLocks reads /proc/locks. The kernel produces it a page at a time,
// so while locks change a long list can show an entry twice or miss one:
// callers de-duplicate, and treat it as a hint where a miss matters.
func ReadLocks() ([]Lock, error) { return readTable(procRoot+"/locks", parseLockLine) }

// ParseLocks parses the lines of /proc/locks that have a READ or WRITE
// mode; others (leases' BREAKING, UNLCK, malformed lines) are skipped.
// Lines look like
//
//	1: FLOCK  ADVISORY  WRITE 1234 fe:00:7864554 0 EOF
//	1: -> FLOCK  ADVISORY  WRITE 4321 fe:00:7864554 0 EOF
func ParseLocks(data []byte) []Lock { return parseLines(data, parseLockLine) }

func parseLockLine(line []byte) (Lock, bool) {
	f := bytes.Fields(line)
	if len(f) < 6 {
		return Lock{}, false
	}
	f = f[1:] // "N:"
	var l Lock
	if string(f[0]) == "->" {
		l.Blocked = true
		f = f[1:]
	}
	if len(f) < 5 {
		return Lock{}, false
	}
	l.Kind = string(f[0])
	switch string(f[2]) {
	case "READ":
	case "WRITE":
		l.Write = true
	default:
		return Lock{}, false
	}
	pid, err := strconv.Atoi(string(f[3]))
	if err != nil {
		return Lock{}, false
	}
	l.PID = pid
	dev := bytes.Split(f[4], []byte(":"))
	if len(dev) != 3 {
		return Lock{}, false
	}
	maj, err1 := strconv.ParseUint(string(dev[0]), 16, 32)
	min, err2 := strconv.ParseUint(string(dev[1]), 16, 32)
	ino, err3 := strconv.ParseUint(string(dev[2]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return Lock{}, false
	}
	l.Major, l.Minor, l.Inode = uint32(maj), uint32(min), ino
	if len(f) > 5 {
		l.Start, _ = strconv.ParseUint(string(f[5]), 10, 64)
	}
	return l, true
}
