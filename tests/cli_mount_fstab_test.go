package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireMountHelper skips t unless mount(8) can run scanlockfs here the
// way it does at boot: as root, with mount.fuse3 and unshare(1) (the test
// installs scanlockfs as /usr/local/bin/scanlockfs inside a private mount
// namespace, leaving the machine's own /usr/local/bin alone). Under CI it
// fails instead.
func requireMountHelper(t *testing.T) {
	t.Helper()
	requireFUSE(t)
	why := ""
	if os.Geteuid() != 0 {
		why = "mount(8) with fstab lines needs root"
	}
	for _, p := range []string{"mount", "umount", "unshare", "findmnt", "/sbin/mount.fuse3"} {
		if _, err := exec.LookPath(p); err != nil && why == "" {
			why = p + " is missing (packages mount, util-linux, fuse3)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", why)
	}
	t.Skip(why)
}

// An fstab line `SOURCE MOUNTPOINT fuse.scanlockfs OPTIONS 0 0` and
// `mount -t fuse.scanlockfs -o OPTIONS SOURCE MOUNTPOINT` work through
// the real mount(8) and mount.fuse3, which run `scanlockfs SOURCE
// MOUNTPOINT -o OPTIONS` from PATH: mount returns once the mount serves
// (the next command reads through it), the options arrive, umount(8) and
// `scanlockfs unmount` stop the server, and a bad option (or mount.fuse3's
// drop_privileges, which scanlockfs does not support) fails mount(8) with
// scanlockfs's message.
func TestFstabLineMountsThroughMountFuse3(t *testing.T) {
	t.Parallel()
	requireMountHelper(t)
	src := scanDB(t, "scanA")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	fstab := filepath.Join(dir, "fstab")
	log1, log2 := filepath.Join(dir, "cmdline.log"), filepath.Join(dir, "fstab.log")
	must(t, os.WriteFile(fstab, []byte("# test fstab\n"+src+" "+mnt+
		" fuse.scanlockfs timeout=30s,allow_other,info_files=false,log_file="+log2+",nofail,_netdev,x-systemd.automount 0 0\n"), 0o644))

	// The mount namespace is private: nothing done in it reaches the host,
	// and the trap detaches the mount if a step fails, so that the server
	// exits.
	script := `set -eu
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
mount --bind "$BINDIR" /usr/local/bin
waitlog() { for i in $(seq 1000); do grep -q "every scan lock released" "$1" && return 0; sleep 0.01; done; echo "no clean stop in $1" >&2; return 1; }

mount -t fuse.scanlockfs -o timeout=5s,log_file="$LOG1" "$SRC" "$MNT"
echo "cmdline: $(findmnt -n -o FSTYPE,SOURCE "$MNT")"
echo "read: $(cat "$MNT/scanA/files.json")"
scanlockfs unmount "$MNT"
waitlog "$LOG1"

mount -T "$FSTAB" "$MNT"
echo "fstab: $(findmnt -n -o FSTYPE,SOURCE,OPTIONS "$MNT")"
echo "read: $(cat "$MNT/scanA/files.json")"
umount "$MNT"
waitlog "$LOG2"

if mount -t fuse.scanlockfs -o timeout=5s,bogus "$SRC" "$MNT" 2>err; then echo "bad option mounted" >&2; exit 1; fi
echo "refused: $(cat err)"
if mount -t fuse.scanlockfs -o drop_privileges "$SRC" "$MNT" 2>err; then echo "drop_privileges mounted" >&2; exit 1; fi
echo "refused: $(cat err)"
# mount.fuse3 mounted before it ran scanlockfs: a dead mount is left.
if findmnt "$MNT" >/dev/null; then scanlockfs unmount "$MNT"; fi
if findmnt "$MNT" >/dev/null; then echo "still mounted" >&2; exit 1; fi
echo done
`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BINDIR="+filepath.Dir(binScanlockfs), "SRC="+src, "MNT="+mnt,
		"FSTAB="+fstab, "LOG1="+log1, "LOG2="+log2)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"cmdline: fuse.scanlockfs " + src + "\n",
		"fstab: fuse.scanlockfs " + src + " ",
		"read: files of scanA\n",
		`refused: scanlockfs: unknown mount option "bogus"`,
		"refused: scanlockfs: MOUNTPOINT /dev/fd/",
		"remove drop_privileges from the mount options",
		"done\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "read: files of scanA\n") != 2 {
		t.Errorf("not both mounts served the file:\n%s", got)
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(line, "fstab: ") && !strings.Contains(line, "allow_other") {
			t.Errorf("the fstab options did not arrive: %s", line)
		}
	}
	b1, _ := os.ReadFile(log1)
	b2, _ := os.ReadFile(log2)
	if !strings.Contains(string(b1), "timeout=5s") || !strings.Contains(string(b2), "info_files=false") {
		t.Errorf("the options did not reach the servers:\n%s\n%s", b1, b2)
	}
}
