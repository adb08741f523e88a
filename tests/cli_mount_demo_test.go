package tests

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"scanlockfs/internal/procfs"
)

// demoLimit bounds a run of scripts/demo: it takes a few seconds, many
// more on a loaded machine; the limit is only there to end a hung run.
const demoLimit = 2 * time.Minute

// script is a run of one of scripts/, with its temporary directory under
// tmp and its output in out.
type script struct {
	cmd      *exec.Cmd
	tmp      string
	out      syncBuffer
	deadline time.Time
}

// startScript runs scripts/name for at most limit, with TMPDIR a directory
// of its own, SCANLOCKFS the binary under test and env added to its
// environment. Like a shell's foreground job, it runs in a process group
// of its own with SIGINT at its default action, so that ctrlC can do what
// a Ctrl-C does; past the limit, the whole group is killed.
func startScript(t *testing.T, name string, limit time.Duration, env ...string) *script {
	t.Helper()
	defaultInterrupt()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	s := &script{tmp: t.TempDir(), deadline: time.Now().Add(limit)}
	s.cmd = exec.CommandContext(ctx, filepath.Join(repoRoot(t), "scripts", name))
	s.cmd.Env = append(append(os.Environ(), "TMPDIR="+s.tmp, "SCANLOCKFS="+binScanlockfs), env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Cancel = func() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) }
	s.cmd.WaitDelay = 10 * time.Second // for programs that outlive it holding its output
	must(t, s.cmd.Start())
	return s
}

// startDemo runs scripts/demo for at most limit (see startScript).
func startDemo(t *testing.T, limit time.Duration, env ...string) *script {
	t.Helper()
	return startScript(t, "demo", limit, env...)
}

// ctrlC does what a Ctrl-C in a terminal does: SIGINT to the whole
// foreground process group, the script and the programs it runs.
func (s *script) ctrlC() error {
	return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGINT)
}

// waitOutput waits until the script has printed text, up to its limit.
func (s *script) waitOutput(t *testing.T, text string) {
	t.Helper()
	for !strings.Contains(s.out.String(), text) {
		if time.Now().After(s.deadline) {
			t.Fatalf("scripts/%s never printed %q:\n%s", filepath.Base(s.cmd.Path), text, s.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// defaultInterrupt gives the programs the tests start SIGINT at its
// default action, as a shell gives it to a foreground job, also when this
// test binary was started with SIGINT ignored (by a non-interactive
// shell's `&`, say): an ignored signal stays ignored across exec, and
// bash cannot trap a signal that was ignored when it started. A child gets
// the default action for the signals this process handles; the SIGINTs
// this handler gets are dropped, as they were ignored.
var defaultInterrupt = sync.OnceFunc(func() {
	if signal.Ignored(syscall.SIGINT) {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGINT)
	}
})

// checkDemoLeftNothing fails t if the demo left a mount, a file or a
// process behind under tmp.
func checkDemoLeftNothing(t *testing.T, tmp string) {
	t.Helper()
	ms, err := procfs.ReadMountinfo()
	must(t, err)
	for _, m := range ms {
		if strings.HasPrefix(m.MountPoint, tmp+"/") {
			t.Errorf("the demo left a mount behind: %s", m.MountPoint)
			_ = exec.Command("umount", "-l", m.MountPoint).Run()
		}
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("the demo left files behind in %s: %v %v", tmp, entries, err)
	}
	pids, err := procfs.PIDs()
	must(t, err)
	for _, pid := range pids {
		if args, err := procfs.ReadCmdline(pid); err == nil && strings.Contains(strings.Join(args, " "), tmp) {
			t.Errorf("the demo left a process behind: pid %d %q", pid, args)
		}
	}
}

// scripts/demo runs to the end: the reader of scan_001 returns only after
// the writer closed its file, at least the writer's extra second later,
// while scan_002 is not blocked; status shows the writer; nothing is left
// behind.
func TestDemoScript(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	d := startDemo(t, demoLimit)
	err := d.cmd.Wait()
	got := d.out.String()
	if err != nil {
		t.Fatalf("scripts/demo: %v\n%s", err, got)
	}
	checkDemoLeftNothing(t, d.tmp)

	order := []string{
		"scanlockfs: mounted $DEMO/db on $DEMO/mnt",
		"writer  opened scan_001/metadata/metadata.json for writing",
		"reader  is waiting in open(2)",
		`other   cat scan_002/files.json`, `{"id": "scan_002"`,
		"$ " + binScanlockfs + " status $DEMO/db",
		"writer  writes, then closes the file",
		"reader  got scan_001/files.json", `{"id": "scan_001"`,
		"Done;",
	}
	at := 0
	for _, w := range order {
		i := strings.Index(got[at:], w)
		if i < 0 {
			t.Fatalf("the demo's output lacks %q after position %d:\n%s", w, at, got)
		}
		at += i + len(w)
	}
	if !regexp.MustCompile(`(?m)^  scan_001 +exclusive +exclusive +\d+ `).MatchString(got) {
		t.Errorf("status does not show scan_001 held exclusively:\n%s", got)
	}
	m := regexp.MustCompile(`The reader waited (\d+) ms`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no wait figure:\n%s", got)
	}
	// The writer releases only after its extra second, which starts once
	// the reader is seen waiting: a reader that did not wait is a bug.
	if ms, _ := strconv.Atoi(m[1]); ms < 1000 {
		t.Errorf("the reader waited %d ms, less than the writer's extra second:\n%s", ms, got)
	}
}

// Stopped half-way (while the reader waits), the demo still unmounts,
// stops its background programs and the server, removes its directory,
// and exits with the signal's code: by a Ctrl-C (SIGINT to its process
// group), by SIGINT to the script alone, and by kill (SIGTERM).
func TestDemoScriptCleansUpWhenInterrupted(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	for _, c := range []struct {
		name string
		stop func(d *script) error
		code int
	}{
		{"ctrl-c", (*script).ctrlC, 130},
		{"sigint", func(d *script) error { return d.cmd.Process.Signal(syscall.SIGINT) }, 130},
		{"kill", func(d *script) error { return d.cmd.Process.Signal(syscall.SIGTERM) }, 143},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := startDemo(t, demoLimit)
			d.waitOutput(t, "is waiting in open(2)")
			must(t, c.stop(d))
			err := d.cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != c.code {
				t.Errorf("stopped demo: %v, want exit code %d\n%s", err, c.code, d.out.String())
			}
			checkDemoLeftNothing(t, d.tmp)
		})
	}
}

// Run from a checkout, the demo shows that checkout's scanlockfs, not an
// older one installed in PATH: it builds its own.
func TestDemoScriptUsesTheCheckoutsBinary(t *testing.T) {
	// Not parallel: its build and compression would slow the timed tests
	// that run in parallel (the demo's own limit).
	requireFUSE(t)
	fake := t.TempDir()
	marker := filepath.Join(fake, "ran")
	must(t, os.WriteFile(filepath.Join(fake, "scanlockfs"), []byte("#!/bin/sh\ntouch "+marker+"\nexit 1\n"), 0o755))
	d := startDemo(t, demoLimit+60*time.Second, // and a build
		"PATH="+fake+":"+os.Getenv("PATH")+":/usr/local/go/bin", "SCANLOCKFS=")
	out := &d.out
	if err := d.cmd.Wait(); err != nil {
		t.Fatalf("scripts/demo with an old scanlockfs in PATH: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("the demo ran the scanlockfs of PATH:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "building scanlockfs from "+repoRoot(t)) {
		t.Errorf("the demo does not say it built the checkout's scanlockfs:\n%s", out.String())
	}
	checkDemoLeftNothing(t, d.tmp)
}

// scripts/quickstart without arguments: a sample scan database shaped like
// plantdb's (romidb, users.json, scans with files.json, images/,
// metadata/), mounted on a throw-away mount point; the three commands it
// prints work as they say (the writer holds the scan, the reader waits for
// it, status shows both); Ctrl-C unmounts and removes everything.
func TestQuickstartSampleDatabase(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	qs := startScript(t, "quickstart", demoLimit)
	out := &qs.out
	stopped := false
	defer func() { // on failure: Ctrl-C, so that it still unmounts
		if !stopped {
			_ = qs.ctrlC()
			_ = qs.cmd.Wait()
		}
	}()

	qs.waitOutput(t, "3) ")
	qs.waitOutput(t, " status ")
	text := out.String()
	var cmds []string
	for _, m := range regexp.MustCompile(`(?m)^ +\$ (.*)$`).FindAllStringSubmatch(text, -1) {
		cmds = append(cmds, strings.TrimSuffix(m[1], " &"))
	}
	if len(cmds) != 3 {
		t.Fatalf("want three commands, got %q:\n%s", cmds, text)
	}
	db := regexp.MustCompile(`sample scan database (\S+):`).FindStringSubmatch(text)
	if db == nil {
		t.Fatalf("no sample database named:\n%s", text)
	}
	for _, p := range []string{"romidb", "users.json", "real_plant/files.json", "real_plant/images", "real_plant/metadata/metadata.json",
		"virtual_plant/files.json", "real_plant_analyzed/files.json"} {
		if _, err := os.Stat(filepath.Join(db[1], p)); err != nil {
			t.Errorf("the sample database lacks %s: %v", p, err)
		}
	}
	var files map[string]any
	b, err := os.ReadFile(filepath.Join(db[1], "real_plant/files.json"))
	must(t, err)
	if err := json.Unmarshal(b, &files); err != nil {
		t.Errorf("real_plant/files.json is not JSON: %v\n%s", err, b)
	}

	// 1) the writer
	writer := exec.Command("sh", "-c", cmds[0])
	writer.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // sh runs sh runs sleep: stop them all
	must(t, writer.Start())
	killWriter := func() { _ = syscall.Kill(-writer.Process.Pid, syscall.SIGKILL) }
	defer func() { killWriter(); _ = writer.Wait() }()
	deadline := time.Now().Add(waitLimit)
	for lockState(t, db[1], "real_plant").State != "exclusive" {
		if time.Now().After(deadline) {
			t.Fatal("command 1 did not take real_plant exclusively")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// 2) the reader waits
	var readerOut syncBuffer
	reader := exec.Command("bash", "-c", cmds[1])
	reader.Stdout, reader.Stderr = &readerOut, &readerOut
	must(t, reader.Start())
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Wait() }()
	// 3) status shows the writer and, once queued, the waiting reader.
	for {
		st := run(t, "sh", "-c", cmds[2])
		if regexp.MustCompile(`(?m)^real_plant +exclusive +exclusive +\d+ +sleep .* mount `).MatchString(st) &&
			regexp.MustCompile(`(?m)^real_plant +exclusive +shared \(waiting\) +\d+ +cat `).MatchString(st) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command 3 never showed the writer and the waiting reader:\n%s", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-readerDone:
		t.Fatalf("the reader did not wait for the writer: %v\n%s", err, readerOut.String())
	default:
	}
	killWriter()
	if err := <-readerDone; err != nil || !strings.Contains(readerOut.String(), `"filesets"`) {
		t.Fatalf("the reader after the writer: %v\n%s", err, readerOut.String())
	}

	// Ctrl-C: unmounted, removed, exit 130.
	must(t, qs.ctrlC())
	err = qs.cmd.Wait()
	stopped = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("quickstart after Ctrl-C: %v, want exit code 130\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "unmounted and removed") {
		t.Errorf("quickstart did not say it cleaned up:\n%s", out.String())
	}
	checkDemoLeftNothing(t, qs.tmp)
}
