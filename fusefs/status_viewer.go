package fusefs

import (
	"context"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// What the status view shows to whom. The daemon runs as root and sees
// every hold; a reader of MOUNTPOINT/.locks sees no more than it could
// find out itself:
//
//   - the path a program of the mount holds a scan for (and the note of
//     a process on SOURCE, from its .info file) only to root, to the
//     holder's own user, and, for a path, to a user who may list every
//     directory it names (search permission on each directory from
//     SOURCE down, read and search on the last one). Otherwise path (or
//     note) is "" and path_hidden (note_hidden) is true;
//   - pids, command names and users of holders to everybody: /proc shows
//     them to every user too (unless /proc is mounted with hidepid).
//
// Permissions are decided from mode bits, owner and group (supplementary
// groups included); ACLs are not consulted, so a user whom only an ACL
// lets list a directory sees "hidden".

// viewer is the process that opened a file of the status view.
type viewer struct {
	all    bool // root, or no caller known (the daemon's own tests)
	uid    uint32
	user   string
	groups []uint32 // the primary group and the supplementary ones
}

// viewerOf returns the caller of a FUSE request. Supplementary groups
// come from /proc/PID/status ("Groups:"), read once per open of a status
// file.
func viewerOf(ctx context.Context) *viewer {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return &viewer{all: true}
	}
	v := &viewer{uid: c.Uid, user: lockmgr.UserNameOf(c.Uid), groups: []uint32{c.Gid}, all: c.Uid == 0}
	if !v.all && c.Pid != 0 {
		v.groups = append(v.groups, procGroups(int(c.Pid))...)
	}
	return v
}

// procGroups returns the supplementary groups of process (or thread)
// pid, none if it cannot be read.
func procGroups(pid int) []uint32 {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return nil
	}
	return st.Groups
}

var _ scanstatus.Redactor = (*redactor)(nil)

// redactor decides, for one rendering, which paths and notes a viewer
// may see. It remembers the directories it checked.
type redactor struct {
	v      *viewer
	source string
	dirs   map[string]bool
}

// redactorFor returns what v may not see, nil if v may see everything.
func (fsys *fileSystem) redactorFor(v *viewer) scanstatus.Redactor {
	if v == nil || v.all {
		return nil
	}
	return &redactor{v: v, source: fsys.status.source, dirs: map[string]bool{}}
}

// inheritedSuffix is what inherit.go appends to the note of a request
// made through an inherited descriptor.
var inheritedSuffix = regexp.MustCompile(` \(inherited from pid [0-9]+, in pid [0-9]+\)$`)

// ShowPath reports whether the viewer may see the path of a hold of
// user through the mount ("scan/f", "a -> b" for a rename, with the
// suffix of an inherited descriptor).
func (r *redactor) ShowPath(path, user string) bool {
	if path == "" || user == r.v.user {
		return true
	}
	for _, p := range strings.Split(inheritedSuffix.ReplaceAllString(path, ""), " -> ") {
		if !r.mayList(filepath.Dir(filepath.Clean("/" + p))) {
			return false
		}
	}
	return true
}

// ShowNote reports whether the viewer may see the note of a process on
// SOURCE (written by it, or by anybody in the lock directory's group,
// into its .info file) whose real user is user.
func (r *redactor) ShowNote(note, user string) bool {
	return note == "" || (user != "" && user == r.v.user)
}

// mayList reports whether the viewer may list dir ("/" is SOURCE;
// "/scanA/sub"): search permission on every directory from SOURCE down
// to dir, and read permission on dir.
func (r *redactor) mayList(dir string) bool {
	if ok, seen := r.dirs[dir]; seen {
		return ok
	}
	ok := true
	cur := r.source
	parts := strings.Split(strings.Trim(dir, "/"), "/")
	if dir == "/" {
		parts = nil
	}
	for i := -1; i < len(parts) && ok; i++ {
		if i >= 0 {
			if parts[i] == "" || parts[i] == "." || parts[i] == ".." {
				ok = false
				break
			}
			cur += "/" + parts[i]
		}
		var st syscall.Stat_t
		if syscall.Lstat(cur, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			ok = false
			break
		}
		want := uint32(1) // search
		if i == len(parts)-1 {
			want = 5 // read and search
		}
		ok = r.v.permits(&st, want)
	}
	r.dirs[dir] = ok
	return ok
}

// permits reports whether the mode bits of st grant the viewer want
// (r=4, w=2, x=1), as the kernel decides without ACLs.
func (v *viewer) permits(st *syscall.Stat_t, want uint32) bool {
	var bits uint32
	switch {
	case st.Uid == v.uid:
		bits = st.Mode >> 6
	case slices.Contains(v.groups, st.Gid):
		bits = st.Mode >> 3
	default:
		bits = st.Mode
	}
	return bits&want == want
}
