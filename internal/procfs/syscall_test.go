package procfs

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseSyscall(t *testing.T) {
	for in, want := range map[string]int{
		"257 0xffffff9c 0x7ffd 0x0 0x0 0x0 0x0 0x7ffc 0x7f12\n": 257,
		"0 0x3 0x7ffd 0x1000 0x0 0x0 0x0 0x7ffc 0x7f12":         0,
	} {
		if nr, ok := ParseSyscall([]byte(in)); !ok || nr != want {
			t.Errorf("ParseSyscall(%q) = %d, %v; want %d", in, nr, ok, want)
		}
	}
	for _, in := range []string{"running\n", "-1 0x7ffc 0x7f12\n", "", "257", "x 1 2"} {
		if nr, ok := ParseSyscall([]byte(in)); ok {
			t.Errorf("ParseSyscall(%q) = %d, want not blocked", in, nr)
		}
	}
}

// A child blocked reading a pipe sits in read(2).
func TestBlockedIn(t *testing.T) {
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for !BlockedIn(cmd.Process.Pid, unix.SYS_READ) {
		if time.Now().After(deadline) {
			t.Fatal("cat never seen blocked in read(2)")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if BlockedIn(cmd.Process.Pid, unix.SYS_OPENAT) {
		t.Error("cat blocked in read(2) reads as blocked in openat(2)")
	}
}
