package checker

import (
	"fmt"
	"strconv"
	"strings"
)

// CounterContent is the counter file holding n: a header line, a body
// whose length depends on n, and a trailer line. Writers write it in two
// parts with a pause between them, so that a reader not excluded by the
// lock would find a header and trailer that disagree, or a short body.
func CounterContent(n int) []byte {
	body := strings.Repeat(strconv.Itoa(n%10), 1000+(n%7)*500)
	return []byte(fmt.Sprintf("count %d\n%s\nend %d\n", n, body, n))
}

// ParseCounter returns the value of a counter file, or an error if it is
// not exactly CounterContent of some value (half-written). An empty file
// is 0.
func ParseCounter(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) != 4 || lines[3] != "" {
		return 0, fmt.Errorf("torn counter file (%d lines, %d bytes)", len(lines), len(b))
	}
	var n, m int
	if _, err := fmt.Sscanf(lines[0], "count %d", &n); err != nil {
		return 0, fmt.Errorf("torn counter header %q", lines[0])
	}
	if _, err := fmt.Sscanf(lines[2], "end %d", &m); err != nil || m != n {
		return 0, fmt.Errorf("torn counter trailer %q for count %d", lines[2], n)
	}
	if string(CounterContent(n)) != string(b) {
		return 0, fmt.Errorf("torn counter body for count %d", n)
	}
	return n, nil
}

// Content is the deterministic content that slclient's put writes: size
// letters from a generator seeded with seed.
func Content(size, seed int) []byte {
	b := make([]byte, size)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = 'a' + byte(x%26)
	}
	return b
}
