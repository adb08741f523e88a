package tests

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// pyMeta runs metadata changes the kernel checks no permission for, as
// the caller, and prints "NAME ok" or "NAME ERRNO" for each.
const pyMeta = `
import errno, os, struct, sys
path = sys.argv[1]
# A POSIX ACL (version 2) that would give everyone read and write.
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, 6, 0xFFFFFFFF) for tag in (0x01, 0x04, 0x20))
for name in sys.argv[2:]:
    try:
        if name == "noop-chown":
            os.chown(path, -1, -1)
        elif name == "set-acl":
            os.setxattr(path, "system.posix_acl_access", acl)
        elif name == "remove-acl":
            os.removexattr(path, "system.posix_acl_access")
        print(name, "ok", flush=True)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
`

// A user who may not write a file cannot get its scan's exclusive lock
// through the changes the kernel lets through unchecked: chown(path, -1,
// -1) (allowed to anyone, as on a local file system, and takes no lock)
// and setting or removing a system.* attribute (POSIX ACLs: EPERM for
// all but the owner, before any lock is asked for). They return while a
// reader holds the scan (an exclusive request would wait), no exclusive
// lock is granted, and a new reader is not held up behind them. Before
// the fix each waited for the scan exclusively, and the ACL was set by
// root.
func TestSecurityNoExclusiveLockWithoutPermission(t *testing.T) {
	cred := otherUser(t)
	d := mountT(t, scanDB(t, "scanA"), "--allow-other")
	openToAll(t, d.mnt)
	base := d.leakBaseline(t)
	grants := func() float64 {
		return metricValue(t, d.metrics(t), "scanlockfs_lock_grants_total", "mode", "exclusive")
	}
	before := grants()
	stBefore := fileState(t, d.srcPath("scanA/files.json"))

	reader := startClient(t, "root reader")
	reader.mustOpen("r", d.path("scanA/files.json"), "r")
	ops := []string{"noop-chown", "set-acl", "remove-acl"}
	p := startPy(t, "other", cred, pyMeta, append([]string{d.path("scanA/files.json")}, ops...)...)
	want := map[string]string{"noop-chown": "ok", "set-acl": "EPERM", "remove-acl": "EPERM"}
	for _, op := range ops {
		if f := p.expect(op); f[1] != want[op] {
			t.Errorf("%s by a user who may not write the file: %s, want %s", op, f[1], want[op])
		}
	}
	must(t, p.wait())
	// Nobody queued for the scan: a second reader gets it at once.
	r2 := startClient(t, "second reader")
	r2.open("r2", d.path("scanA/files.json"), "rn")
	if r := r2.result("r2"); r.kind != "ok" {
		t.Fatalf("a new reader after the refused changes: %s, want the scan at once", r.errno)
	}
	r2.close("r2")
	reader.close("r")
	if after := grants(); after != before {
		t.Fatalf("exclusive grants went from %v to %v: a change without permission locked the scan", before, after)
	}
	if st := fileState(t, d.srcPath("scanA/files.json")); st != stBefore {
		t.Fatalf("the file changed:\nbefore %s\nafter  %s", stBefore, st)
	}
	if _, err := unix.Getxattr(d.srcPath("scanA/files.json"), "system.posix_acl_access", make([]byte, 256)); err == nil {
		t.Fatal("the file has an ACL now")
	}
	// Root's own no-op chown through the mount works too.
	must(t, os.Chown(d.path("scanA/files.json"), -1, -1))
	d.checkNoLeaks(t, base)
	d.stopNoLeaks(t)
}
