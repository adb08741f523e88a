// Package tests holds the end-to-end tests: they build the scanlockfs
// binary, mount real FUSE file systems with it in a separate process and
// drive them with real programs (cat, cp, dd, sed, tar, python3) and with
// slclient, a helper that reports when its calls started and returned.
//
// FUSE tests need /dev/fuse and root (or fusermount3). Where FUSE is
// missing they are skipped, except with CI=true, where they fail.
package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

var (
	// binScanlockfs and binClient are built once by TestMain.
	binScanlockfs string
	binClient     string
	// fuseMissing says why FUSE cannot be used here ("" if it can).
	fuseMissing string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "scanlockfs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	binScanlockfs = filepath.Join(dir, "scanlockfs")
	binClient = filepath.Join(dir, "slclient")
	for _, b := range []struct{ out, pkg string }{
		{binScanlockfs, "scanlockfs"},
		{binClient, "scanlockfs/tests/internal/slclient"},
	} {
		args := []string{"build", "-o", b.out}
		if raceEnabled && b.out == binScanlockfs {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", b.pkg, err)
			return 1
		}
	}
	fuseMissing = checkFUSE()
	return m.Run()
}

// checkFUSE says why FUSE mounts cannot work here, or "".
func checkFUSE() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("cannot open /dev/fuse: %v", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "not root and no fusermount3 (apt-get install fuse3)"
		}
	}
	return ""
}

// requireFUSE skips t where FUSE is unavailable, or fails it under CI.
func requireFUSE(t testing.TB) {
	t.Helper()
	if fuseMissing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FUSE unavailable under CI=true: %s", fuseMissing)
	}
	t.Skipf("FUSE unavailable: %s", fuseMissing)
}
