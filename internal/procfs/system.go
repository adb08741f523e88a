package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// The machine-wide tables the benchmark reports its machine with.

// ReadCPUModel returns the model name of the first CPU (/proc/cpuinfo).
func ReadCPUModel() (string, error) { return readAs(procRoot+"/cpuinfo", ParseCPUModel) }

// ParseCPUModel returns the first "model name" of /proc/cpuinfo, lines of
// "key<tabs>: value". Architectures without that key give ErrFormat.
func ParseCPUModel(b []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no model name in cpuinfo: %w", ErrFormat)
}

// ReadMemTotal returns the machine's memory in KiB (/proc/meminfo).
func ReadMemTotal() (uint64, error) { return readAs(procRoot+"/meminfo", ParseMemTotal) }

// ParseMemTotal reads the "MemTotal:   16318412 kB" line of
// /proc/meminfo.
func ParseMemTotal(b []byte) (uint64, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("MemTotal:")); ok {
			n, err := parseKiB(bytes.Fields(rest))
			if err != nil {
				return 0, fmt.Errorf("MemTotal %q: %w", rest, ErrFormat)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no MemTotal in meminfo: %w", ErrFormat)
}

// ReadLoadavg returns the load averages over 1, 5 and 15 minutes
// (/proc/loadavg).
func ReadLoadavg() ([3]float64, error) { return readAs(procRoot+"/loadavg", ParseLoadavg) }

// ParseLoadavg reads the first three fields of /proc/loadavg
// ("0.52 0.58 0.59 1/467 12345").
func ParseLoadavg(b []byte) ([3]float64, error) {
	var out [3]float64
	f := bytes.Fields(b)
	if len(f) < 3 {
		return out, fmt.Errorf("loadavg %q: %w", b, ErrFormat)
	}
	for i := range out {
		v, err := strconv.ParseFloat(string(f[i]), 64)
		if err != nil || v < 0 {
			return out, fmt.Errorf("loadavg %q: %w", b, ErrFormat)
		}
		out[i] = v
	}
	return out, nil
}
