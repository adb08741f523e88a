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

	"scanlockfs/internal/testutil"
)

var (
	// binScanlockfs and binClient are built once by TestMain.
	binScanlockfs string
	binClient     string
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
	return m.Run()
}

// requireFUSE skips t where FUSE is unavailable, or fails it under CI.
func requireFUSE(t testing.TB) {
	t.Helper()
	testutil.RequireFUSE(t)
}
