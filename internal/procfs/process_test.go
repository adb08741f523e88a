package procfs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"scanlockfs/internal/testutil"
)

// tail20 is the part of a stat line after PPID up to and including the
// start time (field 22), with start time 4242.
const tail20 = "2 3 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 4242 1000 50"

func TestParseStat(t *testing.T) {
	cases := []struct {
		in   string
		want Stat // but the times, tail20's
	}{
		{"25080 (cat) R 25076 " + tail20 + " 18446744073709551615\n", Stat{PID: 25080, Comm: "cat", State: 'R', PPID: 25076}},
		{"7 (a (weird) name) S 1 " + tail20, Stat{PID: 7, Comm: "a (weird) name", State: 'S', PPID: 1}},
		{"9 (sp ace) Z 0 " + tail20, Stat{PID: 9, Comm: "sp ace", State: 'Z', PPID: 0}},
		// A name made to look like the end of the command and more fields.
		{"11 (x) R 1 2 3) S 99 " + tail20, Stat{PID: 11, Comm: "x) R 1 2 3", State: 'S', PPID: 99}},
		{"12 () (\n) S 5 " + tail20, Stat{PID: 12, Comm: ") (\n", State: 'S', PPID: 5}},
		{"13 () D 6 " + tail20, Stat{PID: 13, Comm: "", State: 'D', PPID: 6}},
	}
	for _, c := range cases {
		c.want.UTime, c.want.STime, c.want.StartTime = 17, 5, 4242
		st, err := ParseStat([]byte(c.in))
		if err != nil || st != c.want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", c.in, st, err, c.want)
		}
	}
	for _, bad := range []string{
		"", "1", "1 (x", "(x) R 1 " + tail20, "x (x) R 1 " + tail20, "-1 (x) R 1 " + tail20,
		"1 (x) R", "1 (x) R zz " + tail20, "1 (x) RR 1 " + tail20,
		"1 (x) R 1 2 3 4", // truncated before the start time
		"1 (x) R 1 " + strings.Replace(tail20, "4242", "-5", 1),
		"1(x) R 1 " + tail20,
	} {
		if st, err := ParseStat([]byte(bad)); err == nil || !errors.Is(err, ErrFormat) {
			t.Errorf("ParseStat(%q) = %+v, %v; want ErrFormat", bad, st, err)
		}
	}
}

func TestReadStat(t *testing.T) {
	self, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self.PID != os.Getpid() || self.PPID != os.Getppid() || self.StartTime == 0 {
		t.Errorf("ReadStat(self) = %+v", self)
	}
	// A child started later has a later (or, within one tick, equal)
	// start time and a hostile name.
	cmd := exec.Command("sh", "-c", "exec -a x sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	child, err := ReadStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if child.PPID != os.Getpid() || child.StartTime < self.StartTime {
		t.Errorf("ReadStat(child) = %+v, self %+v", child, self)
	}
	if _, err := ReadStat(1 << 30); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadStat(no such pid) = %v, want ErrNotExist", err)
	}
}

// TestReadStatHostileName: a process may name itself anything up to 15
// bytes; the parsers still find its parent, start time and name.
func TestReadStatHostileName(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	for _, name := range []string{") (", "a) R 1 2 3", "x\ny) S 1", "((", "))", " "} {
		cmd := exec.Command("python3", "-c",
			"import ctypes,sys; ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0); print('ok', flush=True); sys.stdin.read()", name)
		stop := testutil.StartChild(t, cmd, "ok")
		st, err := ReadStat(cmd.Process.Pid)
		comm, errc := ReadComm(cmd.Process.Pid)
		stop()
		if err != nil || st.PPID != os.Getpid() || st.StartTime == 0 || st.Comm != name {
			t.Errorf("name %q: ReadStat = %+v, %v", name, st, err)
		}
		if errc != nil || comm != name {
			t.Errorf("name %q: ReadComm = %q, %v", name, comm, errc)
		}
	}
}

// refused reports whether a parser refused its input (err != nil), and
// fails t unless it did so with ErrFormat.
func refused(t *testing.T, err error) bool {
	t.Helper()
	if err != nil && !errors.Is(err, ErrFormat) {
		t.Fatalf("error %v does not wrap ErrFormat", err)
	}
	return err != nil
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("25080 (cat) R 25076 " + tail20))
	f.Add([]byte("12 () (\n) S 5 " + tail20))
	f.Add([]byte("1 (x) R 1 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if refused(t, err) {
			return
		}
		if st.PID <= 0 || st.PPID < 0 {
			t.Fatalf("accepted %+v", st)
		}
		// The command is exactly what lies between the first "(" and the
		// last ")".
		s := string(b)
		if got := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]; got != st.Comm {
			t.Fatalf("comm %q, want %q", st.Comm, got)
		}
	})
}

const statusSample = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4250\n" +
	"PPid:\t1\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nUid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t64\nGroups:\t4 24 27 \n"

func TestParseStatus(t *testing.T) {
	st, err := ParseStatus([]byte(statusSample))
	want := Status{Tgid: 4242, Uid: [4]uint32{1000, 1001, 1002, 1003}, Gid: [4]uint32{100, 101, 102, 103},
		Groups: []uint32{4, 24, 27}, VmRSS: 1024, VmHWM: 2048}
	if err != nil || !reflect.DeepEqual(st, want) {
		t.Errorf("ParseStatus = %+v, %v; want %+v", st, err, want)
	}
	// No supplementary groups: "Groups:" with nothing after it.
	st, err = ParseStatus([]byte("Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"))
	if err != nil || len(st.Groups) != 0 {
		t.Errorf("empty groups: %+v, %v", st, err)
	}
	// The first line of a key counts (the kernel escapes Name, but a
	// parser must not depend on that).
	st, err = ParseStatus([]byte("Name:\tx\nTgid:\t7\nUid:\t5\t5\t5\t5\nGid:\t5\t5\t5\t5\nTgid:\t1\nUid:\t0\t0\t0\t0\n"))
	if err != nil || st.Tgid != 7 || st.Uid[0] != 5 {
		t.Errorf("repeated keys: %+v, %v", st, err)
	}
	for _, bad := range []string{
		"", "Name:\tx\n",
		"Tgid:\tabc\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n",
		"Tgid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n",
		"Tgid:\t1\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n",             // truncated
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t-1\n",         // negative
		"Tgid:\t1\nUid:\t0\t0\t0\t4294967296\nGid:\t0\t0\t0\t0\n", // too big
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\tx\n",
		"Tgid:\t1\nUid:\t0\t0\t0\t0\n", // no Gid
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmRSS:\t12 MB\n",
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmHWM:\t-1 kB\n",
	} {
		if st, err := ParseStatus([]byte(bad)); err == nil || !errors.Is(err, ErrFormat) {
			t.Errorf("ParseStatus(%q) = %+v, %v; want ErrFormat", bad, st, err)
		}
	}
}

func TestReadStatus(t *testing.T) {
	st, err := ReadStatus(os.Getpid())
	if err != nil || st.Tgid != os.Getpid() || st.Uid[0] != uint32(os.Getuid()) || st.Gid[0] != uint32(os.Getgid()) ||
		st.VmRSS == 0 || st.VmHWM < st.VmRSS {
		t.Errorf("ReadStatus(self) = %+v, %v", st, err)
	}
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte(statusSample))
	f.Add([]byte("Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStatus(b)
		if refused(t, err) {
			return
		}
		if st.Tgid <= 0 {
			t.Fatalf("accepted Tgid %d", st.Tgid)
		}
	})
}

func TestParseComm(t *testing.T) {
	for in, want := range map[string]string{
		"cat\n": "cat", "a b\n": "a b", ") (\n\n": ") (\n", "": "", "x": "x",
	} {
		if got := ParseComm([]byte(in)); got != want {
			t.Errorf("ParseComm(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := ReadComm(1 << 30); !os.IsNotExist(err) {
		t.Errorf("ReadComm(no such pid): %v", err)
	}
}

func TestParseFDTarget(t *testing.T) {
	cases := map[string]FD{
		"/a/b":                     {Target: "/a/b"},
		"/a/b (deleted)":           {Target: "/a/b", Deleted: true},
		"/a/b (deleted) (deleted)": {Target: "/a/b (deleted)", Deleted: true},
		"pipe:[123]":               {Target: "pipe:[123]"},
		"anon_inode:[x] (deleted)": {Target: "anon_inode:[x] (deleted)"},
		"":                         {},
	}
	for in, want := range cases {
		if got := ParseFDTarget(in); got != want {
			t.Errorf("ParseFDTarget(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestHasFDUnder(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "scan"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "scan", "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !HasFDUnder(os.Getpid(), dir+"/scan") {
		t.Error("open file under dir not found")
	}
	if HasFDUnder(os.Getpid(), dir+"/sc") {
		t.Error("prefix of a name matched")
	}
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	if !HasFDUnder(os.Getpid(), dir+"/scan") {
		t.Error("unlinked open file not found")
	}
	if HasFDUnder(1<<30, dir) {
		t.Error("a process that does not exist has descriptors")
	}
}

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
