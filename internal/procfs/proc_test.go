package procfs

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCmdline(t *testing.T) {
	for in, want := range map[string][]string{
		"cat\x00a b\x00\x00x\x00": {"cat", "a b", "", "x"},
		"rewritten no nul":        {"rewritten no nul"},
		"":                        nil,
		"\x00":                    {""},
	} {
		if got := ParseCmdline([]byte(in)); !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

// A child started in a directory, with arguments, is in PIDs, owned by
// this user, with its working directory, root and arguments; its main
// thread belongs to it and to nobody else.
func TestProcessLinks(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "60", "arg with space")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid

	pids, err := PIDs()
	if err != nil || !slices.Contains(pids, pid) || !slices.Contains(pids, os.Getpid()) {
		t.Errorf("PIDs() lacks the child %d or this process: %v", pid, err)
	}
	if uid, err := OwnerUID(pid); err != nil || uid != uint32(os.Geteuid()) {
		t.Errorf("OwnerUID = %d, %v; want %d", uid, err, os.Geteuid())
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cwd, err := ReadCwd(pid); err != nil || cwd != (FD{Target: real}) {
		t.Errorf("ReadCwd = %+v, %v; want %s", cwd, err, real)
	}
	if root, err := ReadRoot(pid); err != nil || root.Target != "/" {
		t.Errorf("ReadRoot = %+v, %v", root, err)
	}
	// Start returns once the child has exec'd.
	if args, err := ReadCmdline(pid); err != nil || len(args) != 3 || filepath.Base(args[0]) != "sleep" || args[2] != "arg with space" {
		t.Errorf("ReadCmdline = %q, %v", args, err)
	}
	if !HasThread(pid, pid) || HasThread(os.Getpid(), pid) || HasThread(0, pid) {
		t.Errorf("HasThread: the child's main thread is in the child only")
	}

	const gone = 1 << 30
	if _, err := OwnerUID(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OwnerUID(no such pid): %v", err)
	}
	if _, err := ReadCwd(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadCwd(no such pid): %v", err)
	}
	if _, err := ReadCmdline(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadCmdline(no such pid): %v", err)
	}
}

// SelfFDs lists a descriptor this process opens and not the one it uses
// itself; ReadFDs and ReadFD give its number and target, also once the
// file is unlinked.
func TestSelfFDsAndReadFD(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	num := int(f.Fd())
	fds, err := SelfFDs()
	if err != nil || !slices.Contains(fds, num) || !slices.Contains(fds, 0) {
		t.Fatalf("SelfFDs = %v, %v; want %d and 0 among them", fds, err, num)
	}
	// The listing descriptor is the lowest free number, now free again.
	probe, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	free := int(probe.Fd())
	probe.Close()
	if fds2, _ := SelfFDs(); slices.Contains(fds2, free) {
		t.Errorf("SelfFDs lists %d, the descriptor it reads with", free)
	}
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	want := FD{Target: f.Name(), Deleted: true, Num: num}
	if got, err := ReadFD(os.Getpid(), num); err != nil || got != want {
		t.Errorf("ReadFD = %+v, %v; want %+v", got, err, want)
	}
	if got := want.Link(); got != f.Name()+" (deleted)" {
		t.Errorf("Link() = %q", got)
	}
	all, err := ReadFDs(os.Getpid())
	if err != nil || !slices.Contains(all, want) {
		t.Errorf("ReadFDs lacks %+v: %+v, %v", want, all, err)
	}
}

func TestParsePidfdPid(t *testing.T) {
	for in, want := range map[string]int{
		"pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nPid:\t4242\nNSpid:\t4242\n": 4242,
		"Pid:\t-1\n": -1,
	} {
		if got, err := ParsePidfdPid([]byte(in)); err != nil || got != want {
			t.Errorf("ParsePidfdPid(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "pos:\t0\nflags:\t02\n", "Pid:\tx\n", "Pid:\t-2\n"} {
		if got, err := ParsePidfdPid([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("ParsePidfdPid(%q) = %d, %v; want ErrFormat", bad, got, err)
		}
	}
}

// A pidfd of a child reads as the child while it lives and as -1 after.
func TestReadPidfdPid(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	if got, err := ReadPidfdPid(os.Getpid(), pidfd); err != nil || got != cmd.Process.Pid {
		t.Errorf("pidfd of a live child: %d, %v; want %d", got, err, cmd.Process.Pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if got, err := ReadPidfdPid(os.Getpid(), pidfd); err != nil || got != -1 {
		t.Errorf("pidfd of a reaped child: %d, %v; want -1", got, err)
	}
}
