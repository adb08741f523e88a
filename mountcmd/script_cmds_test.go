package mountcmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
)

// The commands TestScripts adds to testscript's own.

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
