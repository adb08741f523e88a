package mountcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
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

// exitCodeNames name the exit codes for the scripts' exits command.
var exitCodeNames = map[string]int{
	"ok": ExitOK, "internal": ExitInternal, "usage": ExitUsage, "timeout": ExitTimeout, "busy": ExitBusy,
	"mount": ExitMount, "notfound": ExitNotFound, "cluster": ExitCluster, "cannot-exec": ExitCannotExec, "command-not-found": ExitCommandNotFound,
	"signal+TERM": ExitSignalBase + int(unix.SIGTERM), "signal+KILL": ExitSignalBase + int(unix.SIGKILL),
	"signal+INT": ExitSignalBase + int(unix.SIGINT),
}

// exits CODE PROG [ARGS...]: run PROG and require exit status CODE (a
// name of exitCodeNames, or a number for COMMAND's own status); its
// output is kept for stdout/stderr checks like exec's.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROG [ARGS...]")
	}
	want, ok := exitCodeNames[args[0]]
	if !ok {
		var err error
		if want, err = strconv.Atoi(args[0]); err != nil {
			ts.Fatalf("exits: bad code %q", args[0])
		}
	}
	err := ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
		if ws, ok := ee.Sys().(unix.WaitStatus); ok && ws.Signaled() {
			ts.Fatalf("exits: %s was killed by %v, want exit code %d", args[1], ws.Signal(), want)
		}
	case err != nil:
		ts.Fatalf("exits: %v", err)
	}
	if got != want {
		ts.Fatalf("exits: %s exited %d, want %d", args[1], got, want)
	}
}

// waitfile FILE: wait until FILE exists (a background process announces
// that it reached a point); fails after 20 s.
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile FILE")
	}
	p := ts.MkAbs(args[0])
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile: %s did not appear within 20s", args[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signal SIG PIDFILE: send SIG (INT, TERM, HUP, QUIT, USR1, USR2, KILL) to
// the process whose pid PIDFILE holds.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: signal SIG PIDFILE")
	}
	sig := unix.SignalNum("SIG" + args[0])
	if sig == 0 {
		ts.Fatalf("signal: unknown signal %q", args[0])
	}
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(args[1])))
	if err != nil {
		ts.Fatalf("signal: %s: %v", args[1], err)
	}
	ts.Check(unix.Kill(pid, sig))
}

// envfile VAR FILE: set $VAR to the trimmed content of FILE.
func cmdEnvfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envfile VAR FILE")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile(args[1])))
}

// json FILE PATH WANT: the value at PATH (dot-separated keys and indexes,
// e.g. scans.0.holders.0.pid) of the JSON document FILE ("stdout" for the
// last output) prints as WANT; "! json FILE PATH" requires PATH to be absent.
func cmdJSON(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 || neg != (len(args) == 2) {
		ts.Fatalf("usage: json FILE PATH WANT | ! json FILE PATH")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &v); err != nil {
		ts.Fatalf("json: %s is not JSON: %v", args[0], err)
	}
	for _, k := range strings.Split(args[1], ".") {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[k]; !ok {
				if neg {
					return
				}
				ts.Fatalf("json: %s: no key %q", args[1], k)
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(c) {
				if neg {
					return
				}
				ts.Fatalf("json: %s: no element %q (length %d)", args[1], k, len(c))
			}
			v = c[i]
		default:
			ts.Fatalf("json: %s: %q is inside a %T", args[1], k, v)
		}
	}
	if neg {
		ts.Fatalf("json: %s exists: %v", args[1], v)
	}
	got := fmt.Sprint(v)
	if f, ok := v.(float64); ok {
		got = strconv.FormatFloat(f, 'f', -1, 64)
	}
	if v == nil {
		got = "null"
	}
	if got != args[2] {
		ts.Fatalf("json: %s is %s, want %s", args[1], got, args[2])
	}
}

// mounted DIR: DIR is a mount point (per /proc/self/mountinfo).
func cmdMounted(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: [!] mounted DIR")
	}
	mounts, err := readMountinfo()
	ts.Check(err)
	isMounted := findMount(mounts, ts.MkAbs(args[0])) != nil
	if isMounted != !neg {
		ts.Fatalf("mounted %s: %v", args[0], isMounted)
	}
}

// waitmount DIR: wait until DIR is a mount point; fails after 20 s.
func cmdWaitmount(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitmount DIR")
	}
	p := ts.MkAbs(args[0])
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mounts, err := readMountinfo()
		ts.Check(err)
		if findMount(mounts, p) != nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitmount: %s not mounted within 20s", args[0])
		}
	}
}

// waitopen PIDFILE: wait until the process whose pid PIDFILE holds is
// blocked in openat(2) (per /proc/PID/syscall), i.e. it waits for a lock
// behind an open through the mount; fails after 20 s or if it exits.
func cmdWaitopen(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitopen PIDFILE")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(args[0])))
	if err != nil {
		ts.Fatalf("waitopen: %s: %v", args[0], err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if procfs.BlockedIn(pid, unix.SYS_OPENAT) {
			return
		}
		if _, err := procfs.ReadStat(pid); err != nil {
			ts.Fatalf("waitopen: process %d: %v", pid, err)
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitopen: process %d not blocked in openat within 20s", pid)
		}
	}
}

// detachMountsUnder lazily unmounts every mount under dir, last first.
func detachMountsUnder(dir string) {
	mounts, err := readMountinfo()
	if err != nil {
		return
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if strings.HasPrefix(mounts[i].point, dir+string(filepath.Separator)) {
			if unix.Unmount(mounts[i].point, unix.MNT_DETACH) != nil {
				_ = exec.Command("fusermount3", "-uz", mounts[i].point).Run()
			}
		}
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"status", "status", 0}, {"stauts", "status", 2}, {"rn", "run", 1}, {"mount", "unmount", 2}, {"x", "version", 7}} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// TestBashCompletionScript drives the printed script in a real bash, as
// the shell would on TAB.
func TestBashCompletionScript(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	for _, d := range []string{"scan_001", "scan_002", ".locks"} {
		if err := os.MkdirAll(filepath.Join(db, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(dir, "ran")
	complete := func(words ...string) string {
		t.Helper()
		script := `source <(scanlockfs completion bash) || exit 1
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
_scanlockfs
printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", append([]string{"-c", script, "bash"}, words...)...).Output()
		if err != nil {
			t.Fatalf("bash completion of %q: %v", words, err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := complete("scanlockfs", "sta"); got != "status" {
		t.Errorf("completing 'sta': %q, want status", got)
	}
	if got := complete("scanlockfs", "run", "--ex"); got != "--exclusive" {
		t.Errorf("completing 'run --ex': %q, want --exclusive", got)
	}
	if got := complete("scanlockfs", "status", db, "scan_"); got != "scan_001\nscan_002" {
		t.Errorf("completing scan ids: %q, want scan_001 and scan_002", got)
	}
	// After "--" the words are run's COMMAND: completion must not run it.
	if got := complete("scanlockfs", "run", "-x", db, "scan_001", "--", "touch", marker, ""); got != "" {
		t.Errorf("completing after --: %q, want nothing", got)
	}
	// Even a completion script that ignores "--" (urfave/cli's own) must not start COMMAND.
	out, err := exec.Command("scanlockfs", "run", "-x", db, "scan_001", "--", "touch", marker, completionFlag).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("completion request after --: %v, output %q; want silent success", err, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a completion request ran run's COMMAND")
	}
	if _, err := os.Stat(filepath.Join(db, ".locks", "scan_001.lock")); err == nil {
		t.Fatal("a completion request took a scan lock")
	}
}
