package procfs

import (
	"os"
	"reflect"
	"strings"
	"testing"
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
