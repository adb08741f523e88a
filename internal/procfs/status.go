package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
)

// Status is the part of /proc/PID/status that scanlockfs uses.
type Status struct {
	Tgid int // the process (thread group) of the thread
	// Uid and Gid are the real, effective, saved and file-system ids.
	Uid, Gid [4]uint32
	Groups   []uint32 // supplementary groups
	// VmRSS and VmHWM are the resident set size now and at its peak, in
	// KiB; 0 for kernel threads, which have no memory of their own.
	VmRSS, VmHWM uint64
}

// ReadStatus reads /proc/PID/status. PID may be any thread's id.
func ReadStatus(pid int) (Status, error) { return readRecord(pid, "status", ParseStatus) }

// ParseStatus parses the contents of /proc/PID/status, lines of
// "Key:\tvalue". The kernel escapes the Name line's value, so a command
// name cannot start a line of its own; still, only the first line of
// each key counts. Tgid, Uid and Gid must be present.
func ParseStatus(b []byte) (Status, error) {
	var st Status
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		key, val, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		k := string(key)
		switch k {
		case "Tgid", "Uid", "Gid", "Groups", "VmRSS", "VmHWM":
		default:
			continue
		}
		if seen[k] {
			continue
		}
		f := bytes.Fields(val)
		var err error
		switch k {
		case "Tgid":
			if len(f) != 1 {
				return Status{}, fmt.Errorf("Tgid %q: %w", val, ErrFormat)
			}
			st.Tgid, err = strconv.Atoi(string(f[0]))
			if err == nil && st.Tgid <= 0 {
				err = ErrFormat
			}
		case "Uid":
			err = parseIDs(f, st.Uid[:])
		case "Gid":
			err = parseIDs(f, st.Gid[:])
		case "Groups":
			st.Groups = make([]uint32, len(f))
			err = parseIDs(f, st.Groups)
		case "VmRSS":
			st.VmRSS, err = parseKiB(f)
		case "VmHWM":
			st.VmHWM, err = parseKiB(f)
		}
		if err != nil {
			return Status{}, fmt.Errorf("%s %q: %w", k, val, ErrFormat)
		}
		seen[k] = true
	}
	if err := sc.Err(); err != nil {
		return Status{}, fmt.Errorf("%w: %w", ErrFormat, err)
	}
	for _, k := range []string{"Tgid", "Uid", "Gid"} {
		if !seen[k] {
			return Status{}, fmt.Errorf("no %s line: %w", k, ErrFormat)
		}
	}
	return st, nil
}

// parseKiB reads "1234 kB".
func parseKiB(f [][]byte) (uint64, error) {
	if len(f) != 2 || string(f[1]) != "kB" {
		return 0, ErrFormat
	}
	return strconv.ParseUint(string(f[0]), 10, 64)
}

func parseIDs(f [][]byte, out []uint32) error {
	if len(f) != len(out) {
		return ErrFormat
	}
	for i, s := range f {
		n, err := strconv.ParseUint(string(s), 10, 32)
		if err != nil {
			return err
		}
		out[i] = uint32(n)
	}
	return nil
}
