package procfs

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	data := []byte("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"46 27 0:43 / /mnt/with\\040space rw,nosuid shared:7 master:2 - fuse.scanlockfs /data/a\\011b\\012c\\134d rw,user_id=0\n" +
		"47 27 0:44 /sub /mnt/x rw - tmpfs  rw\n" + // empty source
		"48 27 0:45 / /mnt/noopt rw - proc proc rw\n" +
		"bad line\n" +
		"49 27 0:46 / /mnt/y rw shared:1\n" + // truncated before "-"
		"50 27 0:46 / /mnt/y rw - ext4\n" + // truncated after "-"
		"51 27 0:46 / /mnt/y rw - ext4 src rw extra\n" +
		"52 x 0:46 / /mnt/y rw - ext4 src rw\n" +
		"53 27 046 / /mnt/y rw - ext4 src rw\n" +
		"54 27 0:46 / /mnt/y - ext4 src rw\n" + // "-" where the options should be
		"\n")
	got := ParseMountinfo(data)
	want := []Mount{
		{ID: 22, ParentID: 1, Major: 8, Minor: 1, Root: "/", MountPoint: "/", Options: "rw,relatime",
			Optional: []string{"shared:1"}, FSType: "ext4", Source: "/dev/sda1", SuperOptions: "rw"},
		{ID: 46, ParentID: 27, Major: 0, Minor: 43, Root: "/", MountPoint: "/mnt/with space", Options: "rw,nosuid",
			Optional: []string{"shared:7", "master:2"}, FSType: "fuse.scanlockfs", Source: "/data/a\tb\nc\\d", SuperOptions: "rw,user_id=0"},
		{ID: 47, ParentID: 27, Major: 0, Minor: 44, Root: "/sub", MountPoint: "/mnt/x", Options: "rw",
			FSType: "tmpfs", SuperOptions: "rw"},
		{ID: 48, ParentID: 27, Major: 0, Minor: 45, Root: "/", MountPoint: "/mnt/noopt", Options: "rw",
			FSType: "proc", Source: "proc", SuperOptions: "rw"},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseMountinfo: %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("mount %d:\n got %+v\nwant %+v", w.ID, g, w)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/a\040b`:  "/mnt/a b",
		`\011\012\134`: "\t\n\\",
		`/plain`:       "/plain",
		`/end\04`:      `/end\04`, // truncated escape stays
		`/x\999`:       `/x\999`,  // not octal
		`/x\400`:       `/x\400`,  // beyond a byte
		`/big\777`:     `/big\777`,
		`/notoctal\9x`: `/notoctal\9x`,
		`/back\134x`:   `/back\x`,
		`/x\0401`:      "/x 1",   // three digits only
		`\\040`:        "\\ ",    // a lone backslash, then an escape
		`/a\-12`:       `/a\-12`, // a sign is not a digit
		`/a\+12`:       `/a\+12`,
		"\\":           "\\",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadMountinfoRoot: the calling process sees a mount at "/".
func TestReadMountinfoRoot(t *testing.T) {
	ms, err := ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.MountPoint == "/" && m.FSType != "" {
			return
		}
	}
	t.Errorf("no root mount in %d mounts", len(ms))
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte("46 27 0:43 / /mnt/with\\040space rw,nosuid shared:7 - fuse.scanlockfs /data/db rw,user_id=0\n"))
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range ParseMountinfo(b) {
			if m.FSType == "" || m.SuperOptions == "" || m.Options == "" || m.Options == "-" {
				t.Fatalf("accepted %+v", m)
			}
			if strings.ContainsAny(m.Options+m.SuperOptions, " \n") {
				t.Fatalf("options with a separator: %+v", m)
			}
		}
	})
}

func FuzzUnescape(f *testing.F) {
	f.Add(`/mnt/a\040b\134`)
	f.Fuzz(func(t *testing.T, s string) {
		got := Unescape(s)
		if len(got) > len(s) {
			t.Fatalf("Unescape(%q) = %q grew", s, got)
		}
		if !strings.Contains(s, `\`) && got != s {
			t.Fatalf("Unescape(%q) = %q changed a string without escapes", s, got)
		}
		// Escaping as the kernel does and unescaping gives the input back.
		esc := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`).Replace(s)
		if back := Unescape(esc); back != s {
			t.Fatalf("Unescape(escape(%q)) = %q", s, back)
		}
	})
}

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
