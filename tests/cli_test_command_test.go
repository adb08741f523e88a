package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeCheckout copies scripts/test into a directory of its own, with a
// stub "go" and "gofmt" first in PATH: the script's own logic (its lock,
// its temporary directory, its leftover check) runs for real, while "go
// test" does what the test says (goTest, a shell command run with the
// script's TMPDIR).
func fakeCheckout(t *testing.T, goTest string) (dir string, cmd func() *exec.Cmd) {
	t.Helper()
	dir = t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "scripts"), 0o755))
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "test"))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "scripts", "test"), script, 0o755))
	stubs := filepath.Join(dir, "stubs")
	must(t, os.Mkdir(stubs, 0o755))
	must(t, os.WriteFile(filepath.Join(stubs, "gofmt"), []byte("#!/bin/sh\ncat >/dev/null\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(stubs, "go"), []byte("#!/bin/sh\n"+
		"echo \"go $*\" >>\"$STUB_LOG\"\n"+
		"[ \"$1\" = test ] || exit 0\n"+
		"echo \"TMPDIR=$TMPDIR\" >>\"$STUB_LOG\"\n"+
		goTest+"\n"), 0o755))
	tmp := t.TempDir() // the TMPDIR the script is given
	return dir, func() *exec.Cmd {
		c := exec.Command(filepath.Join(dir, "scripts", "test"))
		c.Env = append(os.Environ(), "PATH="+stubs+":"+os.Getenv("PATH"), "TMPDIR="+tmp,
			"STUB_LOG="+filepath.Join(dir, "log"), "SCANLOCKFS="+binScanlockfs)
		return c
	}
}

// The test command's leftover check counts only the mounts of its own run
// (everything under the TMPDIR it makes for the run): a scanlockfs mount
// of somebody else on the machine does not fail it, one left by its own
// tests does (and is detached), and it runs exactly gofmt, go vet and go
// test -race -count=1 -timeout 20m ./....
func TestCLITestCommandChecksOnlyItsOwnMounts(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	other := mountT(t, scanDB(t, "scanA")) // not this run's: must not count
	_ = other

	dir, cmd := fakeCheckout(t, "")
	if out, err := cmd().CombinedOutput(); err != nil {
		t.Fatalf("scripts/test failed with a foreign mount on the machine: %v\n%s", err, out)
	}
	log, err := os.ReadFile(filepath.Join(dir, "log"))
	must(t, err)
	if !strings.Contains(string(log), "go vet ./...\ngo test -race -count=1 -timeout 20m ./...\n") {
		t.Errorf("scripts/test did not run go vet and the test command:\n%s", log)
	}
	runTmp := strings.TrimPrefix(strings.Split(string(log), "\n")[2], "TMPDIR=")
	if _, err := os.Stat(runTmp); !os.IsNotExist(err) {
		t.Errorf("the run's TMPDIR %s is still there after a clean run: %v", runTmp, err)
	}

	// A run whose tests leave a mount in their TMPDIR fails.
	dir, cmd = fakeCheckout(t, `mkdir "$TMPDIR/src" "$TMPDIR/mnt" && "$SCANLOCKFS" mount --daemon "$TMPDIR/src" "$TMPDIR/mnt"`)
	out, err := cmd().CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FUSE mounts left behind") || !strings.Contains(string(out), "/mnt") {
		t.Fatalf("scripts/test passed over a mount its tests left: %v\n%s", err, out)
	}
	log, err = os.ReadFile(filepath.Join(dir, "log"))
	must(t, err)
	runTmp = strings.TrimPrefix(strings.Split(string(log), "\n")[2], "TMPDIR=")
	if isMounted(filepath.Join(runTmp, "mnt")) {
		exec.Command("umount", "-l", filepath.Join(runTmp, "mnt")).Run()
		t.Fatal("scripts/test left the leaked mount mounted")
	}
	if !isMounted(other.mnt) {
		t.Fatal("scripts/test touched a mount that was not its own")
	}
}

// The test command's lock is per checkout: a run in another checkout goes
// ahead, a second run in the same checkout is refused.
func TestCLITestCommandLockIsPerCheckout(t *testing.T) {
	t.Parallel()
	dir, cmd := fakeCheckout(t, "")
	// Hold the lock of this checkout as a running scripts/test would.
	holder := exec.Command("flock", filepath.Join(dir, "scripts", "test"), "sleep", "600")
	must(t, holder.Start())
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	waitHeld := exec.Command("sh", "-c", `for i in $(seq 2000); do flock -n "$1" true || exit 0; sleep 0.01; done; exit 1`, "sh", filepath.Join(dir, "scripts", "test"))
	if err := waitHeld.Run(); err != nil {
		t.Fatal("flock(1) never took the lock")
	}
	out, err := cmd().CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another test run is in progress in "+dir) {
		t.Fatalf("a second run in the same checkout was not refused: %v\n%s", err, out)
	}
	_, cmd2 := fakeCheckout(t, "")
	if out, err := cmd2().CombinedOutput(); err != nil {
		t.Fatalf("a run in another checkout waited for or failed on this one's lock: %v\n%s", err, out)
	}
}
