package procfs

import (
	"os"
	"syscall"
	"testing"
)

// An unlinked file held open is found by its former name with the
// identity of the open file; a file that still has its name, and a
// deleted one of another name, are not.
func TestDeletedFiles(t *testing.T) {
	dir := t.TempDir()
	gone := dir + "/s.lock"
	kept := dir + "/t.lock"
	other := dir + "/u.lock"
	open := func(p string) *os.File {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	g := open(gone)
	open(kept)
	open(other)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(g.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	got, err := DeletedFiles(os.Getpid(), "s.lock")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].FD != int(g.Fd()) || got[0].Path != gone || got[0].Dev != st.Dev || got[0].Ino != st.Ino {
		t.Fatalf("DeletedFiles = %+v, want fd %d on %s (%d:%d)", got, g.Fd(), gone, st.Dev, st.Ino)
	}
	if got, _ := DeletedFiles(os.Getpid(), "t.lock"); len(got) != 0 {
		t.Fatalf("a file that keeps its name is reported: %+v", got)
	}
	if _, err := DeletedFiles(1<<30, "s.lock"); !os.IsNotExist(err) {
		t.Fatalf("DeletedFiles(no such pid): %v", err)
	}
}
