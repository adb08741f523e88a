package mountcmd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"scanlockfs/internal/testutil"
)

// TestMain makes this test binary double as the real programs: run as
// "scanlockfs" it is the command line, run as "loopbackfs" a plain FUSE
// loopback server (for unmount tests). Scripts and Go tests start them
// as separate processes through PATH.
func TestMain(m *testing.M) {
	// Under -race every process sleeps 1 s at exit unless told otherwise;
	// these tests start a few hundred.
	if g := os.Getenv("GORACE"); !strings.Contains(g, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(g+" atexit_sleep_ms=0"))
	}
	testscript.Main(m, map[string]func(){
		"scanlockfs": func() { os.Exit(Main(os.Args)) },
		"loopbackfs": loopbackMain,
	})
}

// TestScripts runs testdata/script/*.txtar, each a command-line session
// with the real binary.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Setup: func(e *testscript.Env) error {
			// A failed script may leave its loopback mount behind.
			e.Defer(func() { detachMountsUnder(e.WorkDir) })
			return nil
		},
		Condition: scriptCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":     cmdExits,
			"waitfile":  cmdWaitfile,
			"signal":    cmdSignal,
			"envfile":   cmdEnvfile,
			"json":      cmdJSON,
			"mounted":   cmdMounted,
			"waitmount": cmdWaitmount,
			"waitopen":  cmdWaitopen,
		},
	})
}

// scriptCondition adds [fuse] and [root]. Without FUSE a script is skipped,
// except under CI=true, where a missing FUSE fails the run.
func scriptCondition(cond string) (bool, error) {
	switch cond {
	case "root":
		return os.Geteuid() == 0, nil
	case "fuse":
		err := fuseAvailable()
		if err != nil && os.Getenv("CI") == "true" {
			return false, fmt.Errorf("FUSE is required when CI=true: %v", err)
		}
		return err == nil, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

// fuseAvailable is testutil's check, and these tests need fusermount3
// even as root (they unmount with it).
func fuseAvailable() error {
	if why := testutil.FUSEMissing(); why != "" {
		return errors.New(why)
	}
	_, err := exec.LookPath("fusermount3")
	return err
}

// requireFUSE skips a Go test without FUSE, or fails it under CI=true.
func requireFUSE(t *testing.T) {
	t.Helper()
	if err := fuseAvailable(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("FUSE is required when CI=true: %v", err)
		}
		t.Skipf("no FUSE: %v", err)
	}
}
