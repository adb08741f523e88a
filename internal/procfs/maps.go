package procfs

import (
	"bytes"
	"os"
	"strings"
)

// ReadMappedFiles returns the files a process has mapped
// (/proc/PID/maps), each once, in the order of the map.
func ReadMappedFiles(pid int) ([]FD, error) {
	b, err := os.ReadFile(pidDir(pid) + "/maps")
	if err != nil {
		return nil, err
	}
	return ParseMappedFiles(b), nil
}

// ParseMappedFiles returns the file paths in the contents of
// /proc/PID/maps, each once. Lines look like
//
//	00400000-0040b000 r-xp 00000000 08:01 1234                      /bin/cat
//
// with the path after the fifth field and padding; anonymous maps have
// none, special ones a name in brackets ([heap]), which are left out.
// The path may hold spaces (the kernel escapes only newlines, as \012);
// a file unlinked while mapped ends in " (deleted)", reported in
// FD.Deleted as for descriptors.
func ParseMappedFiles(b []byte) []FD {
	var out []FD
	seen := map[string]bool{}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest := string(line)
		for range 5 {
			rest = strings.TrimLeft(rest, " ")
			i := strings.IndexByte(rest, ' ')
			if i < 0 {
				rest = ""
				break
			}
			rest = rest[i:]
		}
		path := strings.TrimLeft(rest, " ")
		if !strings.HasPrefix(path, "/") || seen[path] {
			continue
		}
		seen[path] = true
		out = append(out, ParseFDTarget(path))
	}
	return out
}
