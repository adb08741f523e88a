package testutil

import "testing"

func TestMustInt64ReadsStamps(t *testing.T) {
	if got := MustInt64(t, "1234567890123"); got != 1234567890123 {
		t.Fatalf("MustInt64 = %d", got)
	}
	if got := MustInt64(t, "-1"); got != -1 {
		t.Fatalf("MustInt64(-1) = %d", got)
	}
}
