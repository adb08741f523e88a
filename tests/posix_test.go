package tests

import (
	"os"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkip lists the go-fuse POSIX checks that cannot apply to this
// mount, and why.
var posixSkip = map[string]string{
	// It expects two descriptors of one process to conflict, which only
	// go-fuse's forwarding to OFD locks on the backing files gives. The
	// mount leaves fcntl locks to the kernel (CAP_POSIX_LOCKS off), which
	// applies POSIX semantics: a process never conflicts with itself.
	"FcntlFlockLocksFile": "POSIX locks of one process do not conflict; the check expects OFD semantics",
}

// The plain file system behaviour is intact: go-fuse's own POSIX checks
// pass on the mount. Each check runs in a scan directory of its own, so
// that its opens take (and release) real scan locks; the test process is
// the client (the server is the separate scanlockfs process), a single
// owner, which the locks must never make wait on itself.
func TestPosix(t *testing.T) {
	// Not parallel: posixtest opens files without O_CLOEXEC, and a daemon
	// that another test starts meanwhile would inherit them, keeping this
	// mount busy and failing that test's descriptor-leak check.
	d := mountT(t, scanDB(t), "--timeout", "5s")
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkip[name]; ok {
				t.Skip(why)
			}
			dir := d.path("posix_" + name)
			must(t, os.Mkdir(dir, 0o755))
			posixtest.All[name](t, dir)
		})
	}
}
