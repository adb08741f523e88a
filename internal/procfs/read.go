package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// readAs reads the file path and parses it.
func readAs[T any](path string, parse func([]byte) (T, error)) (T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var zero T
		return zero, err
	}
	return parse(b)
}

// numbers returns the entries of directory dir that are numbers (pids,
// descriptors), but skip.
func numbers(dir string, skip func(*os.File) int) ([]int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	not := skip(f)
	out := make([]int, 0, len(names))
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n >= 0 && n != not {
			out = append(out, n)
		}
	}
	return out, nil
}

// readRecord reads /proc/PID/NAME, the record of one process, and
// parses it. An error reading it is the OS's (fs.ErrNotExist for a
// process that is gone); a parse error names the file.
func readRecord[T any](pid int, name string, parse func([]byte) (T, error)) (T, error) {
	return readAs(pidDir(pid)+"/"+name, func(b []byte) (T, error) {
		v, err := parse(b)
		if err != nil {
			return v, fmt.Errorf("/proc/%d/%s: %w", pid, name, err)
		}
		return v, nil
	})
}

// readTable reads a kernel table of one entry a line and parses it with
// parseLines.
func readTable[T any](path string, parseLine func(line []byte) (T, bool)) ([]T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return parseLines(data, parseLine), nil
}

// parseLines parses a table of one entry a line, keeping the lines for
// which parseLine says ok: tables skip the lines they cannot read.
func parseLines[T any](data []byte, parseLine func(line []byte) (T, bool)) []T {
	var out []T
	for line := range bytes.SplitSeq(data, []byte("\n")) {
		if v, ok := parseLine(line); ok {
			out = append(out, v)
		}
	}
	return out
}
