package testutil

import (
	"strconv"
	"testing"
)

// MustInt64 parses a decimal number that a helper process printed (a
// time stamp of Now, a count), failing tb if it is not one.
func MustInt64(tb testing.TB, s string) int64 {
	tb.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		tb.Fatalf("not a number: %q", s)
	}
	return n
}
