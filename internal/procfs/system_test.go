package procfs

import (
	"errors"
	"testing"
)

func TestParseCPUModel(t *testing.T) {
	in := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu\n\n" +
		"processor\t: 1\nmodel name\t: other\n"
	if got, err := ParseCPUModel([]byte(in)); err != nil || got != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Errorf("ParseCPUModel = %q, %v", got, err)
	}
	if got, err := ParseCPUModel([]byte("processor\t: 0\nBogoMIPS\t: 50.00\n")); !errors.Is(err, ErrFormat) {
		t.Errorf("cpuinfo without a model name: %q, %v", got, err)
	}
}

func TestParseMemTotal(t *testing.T) {
	if got, err := ParseMemTotal([]byte("MemTotal:       16318412 kB\nMemFree:         1234 kB\n")); err != nil || got != 16318412 {
		t.Errorf("ParseMemTotal = %d, %v", got, err)
	}
	for _, bad := range []string{"", "MemFree: 1 kB\n", "MemTotal: x kB\n", "MemTotal: 12 MB\n", "MemTotal:\n"} {
		if got, err := ParseMemTotal([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseMemTotal(%q) = %d, %v; want ErrFormat", bad, got, err)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	if got, err := ParseLoadavg([]byte("0.52 1.58 10.59 1/467 12345\n")); err != nil || got != [3]float64{0.52, 1.58, 10.59} {
		t.Errorf("ParseLoadavg = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0.5 0.5\n", "0.5 x 0.5 1/2 3\n", "-1 0 0 1/2 3\n"} {
		if got, err := ParseLoadavg([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseLoadavg(%q) = %v, %v; want ErrFormat", bad, got, err)
		}
	}
}

// This machine's tables read.
func TestReadSystem(t *testing.T) {
	if kib, err := ReadMemTotal(); err != nil || kib == 0 {
		t.Errorf("ReadMemTotal = %d, %v", kib, err)
	}
	if _, err := ReadLoadavg(); err != nil {
		t.Errorf("ReadLoadavg: %v", err)
	}
	if _, err := ReadCPUModel(); err != nil && !errors.Is(err, ErrFormat) {
		t.Errorf("ReadCPUModel: %v", err)
	}
}
