package procfs

import (
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo, paths unescaped.
type Mount struct {
	ID, ParentID int
	Major, Minor uint32
	Root         string // the mounted directory of the file system
	MountPoint   string
	Options      string   // per-mount options (rw,nosuid...)
	Optional     []string // shared:N, master:N... ; nil if none
	FSType       string   // fuse.scanlockfs, ext4...
	Source       string   // the mount source; for scanlockfs the absolute SOURCE
	SuperOptions string   // per-superblock options
}

// ReadMountinfo reads /proc/self/mountinfo: the mounts visible to the
// calling process.
func ReadMountinfo() ([]Mount, error) { return readTable(procRoot+"/self/mountinfo", parseMountLine) }

// ParseMountinfo parses mountinfo lines (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Malformed lines are skipped. The kernel escapes space, tab, newline
// and backslash in paths and in the source as \040, \011, \012, \134, so
// fields never contain those bytes; Unescape undoes it.
func ParseMountinfo(data []byte) []Mount { return parseLines(data, parseMountLine) }

func parseMountLine(line []byte) (Mount, bool) {
	f := strings.Fields(string(line))
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	// After "-": type, source, superblock options. An empty source
	// (mount(2) with "") leaves two fields.
	if sep < 0 || len(f) != sep+4 && len(f) != sep+3 || f[5] == "-" {
		return Mount{}, false
	}
	var m Mount
	var err1, err2 error
	m.ID, err1 = strconv.Atoi(f[0])
	m.ParentID, err2 = strconv.Atoi(f[1])
	maj, min, ok := strings.Cut(f[2], ":")
	if err1 != nil || err2 != nil || !ok {
		return Mount{}, false
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return Mount{}, false
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Root = Unescape(f[3])
	m.MountPoint = Unescape(f[4])
	m.Options = f[5]
	if sep > 6 {
		m.Optional = f[6:sep]
	}
	m.FSType = Unescape(f[sep+1])
	if len(f) == sep+4 {
		m.Source = Unescape(f[sep+2])
	}
	m.SuperOptions = f[len(f)-1]
	return m, true
}

// Unescape undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in mountinfo fields. A backslash not followed by three
// octal digits of a byte value stays as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
