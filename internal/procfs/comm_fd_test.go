package procfs

import (
	"os"
	"path/filepath"
	"testing"
)

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
