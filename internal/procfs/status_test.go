package procfs

import (
	"errors"
	"os"
	"slices"
	"testing"
)

const statusSample = "Name:\tcat\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4250\n" +
	"PPid:\t1\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nUid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t64\nGroups:\t4 24 27 \n"

func TestParseStatus(t *testing.T) {
	st, err := ParseStatus([]byte(statusSample))
	if err != nil || st.Tgid != 4242 || st.Uid != [4]uint32{1000, 1001, 1002, 1003} ||
		st.Gid != [4]uint32{100, 101, 102, 103} || !slices.Equal(st.Groups, []uint32{4, 24, 27}) ||
		st.VmHWM != 2048 || st.VmRSS != 1024 {
		t.Errorf("ParseStatus = %+v, %v", st, err)
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
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if st.Tgid <= 0 {
			t.Fatalf("accepted Tgid %d", st.Tgid)
		}
	})
}
