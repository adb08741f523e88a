package procfs

import (
	"os"
	"reflect"
	"testing"
)

func TestParseMappedFiles(t *testing.T) {
	data := []byte("00400000-0040b000 r-xp 00000000 08:01 1234                      /bin/cat\n" +
		"0060a000-0060b000 r--p 0000a000 08:01 1234                      /bin/cat\n" +
		"01a2b000-01a4c000 rw-p 00000000 00:00 0                          [heap]\n" +
		"7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n" +
		"7f0000001000-7f0000002000 r--p 00000000 00:2a 77                /mnt/db/scan A/with  two spaces\n" +
		"7f0000002000-7f0000003000 r--p 00000000 00:2a 78                /mnt/db/scanA/gone (deleted)\n" +
		"7f0000003000-7f0000004000 r--p 00000000 00:2a 79                 /lead\\012ing\n" +
		"truncated 1 2\n" +
		"\n")
	want := []FD{
		{Target: "/bin/cat"},
		{Target: "/mnt/db/scan A/with  two spaces"},
		{Target: "/mnt/db/scanA/gone", Deleted: true},
		{Target: "/lead\\012ing"},
	}
	if got := ParseMappedFiles(data); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMappedFiles:\n got %+v\nwant %+v", got, want)
	}
}

// The test binary maps itself.
func TestReadMappedFilesSelf(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	fds, err := ReadMappedFiles(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if fd.Target == exe {
			return
		}
	}
	t.Errorf("%s not among the mapped files %+v", exe, fds)
}

func FuzzParseMappedFiles(f *testing.F) {
	f.Add([]byte("00400000-0040b000 r-xp 00000000 08:01 1234    /bin/cat\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		seen := map[string]bool{}
		for _, fd := range ParseMappedFiles(b) {
			if fd.Target == "" || fd.Target[0] != '/' {
				t.Fatalf("not a path: %q", fd.Target)
			}
			if seen[fd.Target+string(rune('0'+btoi(fd.Deleted)))] {
				t.Fatalf("%q twice", fd.Target)
			}
			seen[fd.Target+string(rune('0'+btoi(fd.Deleted)))] = true
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
