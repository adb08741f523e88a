package procfs

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseLocks(t *testing.T) {
	data := []byte("1: FLOCK  ADVISORY  WRITE 1234 fe:00:7864554 0 EOF\n" +
		"1: -> FLOCK  ADVISORY  READ 4321 fe:00:7864554 0 EOF\n" +
		"2: POSIX  ADVISORY  READ 55 08:01:99 0 EOF\n" +
		"3: OFDLCK ADVISORY  WRITE -1 08:01:98 0 EOF\n" +
		"4: LEASE  BREAKING  UNLCK 7 08:01:97 0 EOF\n" + // no mode: skipped
		"5: FLOCK  ADVISORY  WRITE x 08:01:96 0 EOF\n" + // bad pid
		"6: FLOCK  ADVISORY  WRITE 8 0801:96 0 EOF\n" + // bad device
		"7: FLOCK  ADVISORY  WRITE 8 zz:01:96 0 EOF\n" +
		"8: FLOCK  ADVISORY  WRITE 8 08:01:-96 0 EOF\n" +
		"9: -> FLOCK  ADVISORY\n" + // truncated
		"10: FLOCK\n" +
		"11: POSIX  ADVISORY  READ 56 08:01:99 1 1\n" +
		"\n")
	want := []Lock{
		{Kind: "FLOCK", Write: true, PID: 1234, Major: 0xfe, Minor: 0, Inode: 7864554},
		{Kind: "FLOCK", PID: 4321, Major: 0xfe, Minor: 0, Inode: 7864554, Blocked: true},
		{Kind: "POSIX", PID: 55, Major: 8, Minor: 1, Inode: 99},
		{Kind: "OFDLCK", Write: true, PID: -1, Major: 8, Minor: 1, Inode: 98},
		{Kind: "POSIX", PID: 56, Major: 8, Minor: 1, Inode: 99, Start: 1},
	}
	got := ParseLocks(data)
	if len(got) != len(want) {
		t.Fatalf("ParseLocks = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestReadLocksSeesOurFlock: a flock this process holds is in the table
// with its device and inode.
func TestReadLocksSeesOurFlock(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/l")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	locks, err := ReadLocks()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if l.Inode == st.Ino && l.Major == unix.Major(st.Dev) && l.Minor == unix.Minor(st.Dev) {
			if l.Kind != "FLOCK" || l.Write || l.PID != os.Getpid() || l.Blocked {
				t.Errorf("our flock reads %+v", l)
			}
			return
		}
	}
	t.Errorf("our flock on inode %d is not in /proc/locks: %+v", st.Ino, locks)
}

func FuzzParseLocks(f *testing.F) {
	f.Add([]byte("1: FLOCK  ADVISORY  WRITE 1234 fe:00:7864554 0 EOF\n1: -> FLOCK  ADVISORY  READ 4321 fe:00:7864554 0 EOF\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, l := range ParseLocks(b) {
			if l.Kind == "" {
				t.Fatalf("accepted a lock without a kind: %+v", l)
			}
		}
	})
}
