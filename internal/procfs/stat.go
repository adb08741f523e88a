package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// ErrFormat is wrapped by errors about input the parsers cannot read.
var ErrFormat = errors.New("unexpected format")

// Stat is the part of /proc/PID/stat that scanlockfs uses.
type Stat struct {
	PID   int
	Comm  string // the command name, as the kernel shows it (at most 15 bytes, any bytes but NUL)
	State byte   // R, S, D, Z, T...
	PPID  int
	// UTime and STime are the CPU time the process spent in user and
	// kernel mode, in clock ticks (fields 14 and 15).
	UTime, STime uint64
	// StartTime is when the process started, in clock ticks after boot
	// (field 22). With the pid it names one process: a pid reused later
	// has a later start time.
	StartTime uint64
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (Stat, error) { return readRecord(pid, "stat", ParseStat) }

// ParseStat parses the contents of /proc/PID/stat:
//
//	PID (COMM) STATE PPID PGRP SESSION ... UTIME(14) STIME(15) ... STARTTIME(22) ...
//
// COMM may contain spaces, parentheses and newlines, so it is what lies
// between the first "(" and the last ")": the fields after it are
// numbers and a state letter, never a parenthesis.
func ParseStat(b []byte) (Stat, error) {
	open := bytes.IndexByte(b, '(')
	close := bytes.LastIndexByte(b, ')')
	if open < 1 || close < open || b[open-1] != ' ' {
		return Stat{}, fmt.Errorf("no (command): %w", ErrFormat)
	}
	var st Stat
	pid, err := strconv.Atoi(string(b[:open-1]))
	if err != nil || pid <= 0 {
		return Stat{}, fmt.Errorf("pid %q: %w", b[:open-1], ErrFormat)
	}
	st.PID = pid
	st.Comm = string(b[open+1 : close])
	// After ")": " S PPID ..." with fields 3 and on; field n is f[n-3].
	f := bytes.Fields(b[close+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, fmt.Errorf("%d fields after the command: %w", len(f), ErrFormat)
	}
	st.State = f[0][0]
	if st.PPID, err = strconv.Atoi(string(f[1])); err != nil || st.PPID < 0 {
		return Stat{}, fmt.Errorf("ppid %q: %w", f[1], ErrFormat)
	}
	if st.UTime, err = strconv.ParseUint(string(f[11]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("utime %q: %w", f[11], ErrFormat)
	}
	if st.STime, err = strconv.ParseUint(string(f[12]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("stime %q: %w", f[12], ErrFormat)
	}
	if st.StartTime, err = strconv.ParseUint(string(f[19]), 10, 64); err != nil {
		return Stat{}, fmt.Errorf("start time %q: %w", f[19], ErrFormat)
	}
	return st, nil
}
