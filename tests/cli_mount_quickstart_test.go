package tests

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scripts/quickstart without arguments: a sample scan database shaped like
// plantdb's (romidb, users.json, scans with files.json, images/,
// metadata/), mounted on a throw-away mount point; the three commands it
// prints work as they say (the writer holds the scan, the reader waits for
// it, status shows both); Ctrl-C unmounts and removes everything.
func TestQuickstartSampleDatabase(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out syncBuffer
	qs := exec.CommandContext(ctx, filepath.Join(repoRoot(t), "scripts", "quickstart"))
	qs.Env = append(os.Environ(), "TMPDIR="+tmp, "SCANLOCKFS="+binScanlockfs)
	qs.Stdout, qs.Stderr = &out, &out
	must(t, qs.Start())
	stopped := false
	defer func() { // on failure: Ctrl-C, so that it still unmounts
		if !stopped {
			_ = qs.Process.Signal(syscall.SIGINT)
			_ = qs.Wait()
		}
	}()

	for !strings.Contains(out.String(), "3) ") || !strings.Contains(out.String(), " status ") {
		if ctx.Err() != nil {
			t.Fatalf("quickstart never printed its three commands:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	must(t, qs.Process.Signal(syscall.SIGINT))
	err = qs.Wait()
	stopped = true
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("quickstart after Ctrl-C: %v, want exit code 130\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "unmounted and removed") {
		t.Errorf("quickstart did not say it cleaned up:\n%s", out.String())
	}
	checkDemoLeftNothing(t, tmp)
}
