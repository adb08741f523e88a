package procfs

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// tail20 is the part of a stat line after PPID up to and including the
// start time (field 22), with start time 4242.
const tail20 = "2 3 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 4242 1000 50"

func TestParseStat(t *testing.T) {
	cases := []struct {
		in    string
		comm  string
		ppid  int
		state byte
	}{
		{"25080 (cat) R 25076 " + tail20 + " 18446744073709551615\n", "cat", 25076, 'R'},
		{"7 (a (weird) name) S 1 " + tail20, "a (weird) name", 1, 'S'},
		{"9 (sp ace) Z 0 " + tail20, "sp ace", 0, 'Z'},
		// A name made to look like the end of the command and more fields.
		{"11 (x) R 1 2 3) S 99 " + tail20, "x) R 1 2 3", 99, 'S'},
		{"12 () (\n) S 5 " + tail20, ") (\n", 5, 'S'},
		{"13 () D 6 " + tail20, "", 6, 'D'},
	}
	for _, c := range cases {
		st, err := ParseStat([]byte(c.in))
		if err != nil || st.Comm != c.comm || st.PPID != c.ppid || st.State != c.state || st.StartTime != 4242 ||
			st.UTime != 17 || st.STime != 5 {
			t.Errorf("ParseStat(%q) = %+v, %v; want comm %q ppid %d start 4242", c.in, st, err, c.comm, c.ppid)
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
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "ok\n" {
			t.Fatalf("python3: %q, %v", line, err)
		}
		st, err := ReadStat(cmd.Process.Pid)
		comm, errc := ReadComm(cmd.Process.Pid)
		in.Close()
		cmd.Wait()
		if err != nil || st.PPID != os.Getpid() || st.StartTime == 0 || st.Comm != name {
			t.Errorf("name %q: ReadStat = %+v, %v", name, st, err)
		}
		if errc != nil || comm != name {
			t.Errorf("name %q: ReadComm = %q, %v", name, comm, errc)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("25080 (cat) R 25076 " + tail20))
	f.Add([]byte("12 () (\n) S 5 " + tail20))
	f.Add([]byte("1 (x) R 1 2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseStat(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
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
