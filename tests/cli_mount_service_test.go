package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"scanlockfs/mountcmd"
)

// repoRoot is the directory of the repository (scripts/ lives there).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Dir(filepath.Dir(file))
}

// scripts/install writes the unit template and an environment file for a
// mount point; the unit passes systemd-analyze verify, and its command
// lines, with the variables of that file, give a service that is ready
// (READY=1) once it serves, comes back after a SIGKILL (what
// Restart=on-failure does: the same ExecStart, whose --recover clears the
// dead mount), and stops cleanly through ExecStop. No systemd runs here:
// the test replays the unit's ExecStart and ExecStop lines the way systemd
// expands them (%f, ${VAR} as one word, $VAR split on spaces).
func TestServiceUnitLifecycle(t *testing.T) {
	t.Parallel()
	requireFUSE(t)
	if _, err := exec.LookPath("systemd-escape"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: systemd-escape is missing (package systemd)")
		}
		t.Skip("systemd-escape is missing (package systemd)")
	}
	src := scanDB(t, "scanA")
	mnt := filepath.Join(t.TempDir(), "scan-db")
	dest := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "install"), src, mnt, "timeout=5s,info_files=false")
	cmd.Env = append(os.Environ(), "DESTDIR="+dest, "SCANLOCKFS_BIN="+binScanlockfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install: %v\n%s", err, out)
	} else if !strings.Contains(string(out), " fuse.scanlockfs timeout=5s,info_files=false,nofail 0 0") {
		t.Errorf("scripts/install does not print the fstab line:\n%s", out)
	}
	must(t, os.Mkdir(mnt, 0o755))

	instance := strings.TrimSpace(run(t, "systemd-escape", "--path", mnt))
	if back := strings.TrimSpace(run(t, "systemd-escape", "--unescape", "--path", instance)); back != mnt {
		t.Fatalf("%%f of instance %q is %q, want %s", instance, back, mnt)
	}
	env := readEnvFile(t, filepath.Join(dest, "etc/scanlockfs", instance+".env"))
	if env["SOURCE"] != src || env["OPTIONS"] != "-o timeout=5s,info_files=false" {
		t.Fatalf("environment file: %q", env)
	}
	unit := filepath.Join(dest, "etc/systemd/system/scanlockfs@.service")
	verifyUnit(t, unit, instance, filepath.Join(dest, "usr/local/bin"))
	start, stop := unitCommand(t, unit, "ExecStart", env, mnt, dest), unitCommand(t, unit, "ExecStop", env, mnt, dest)

	sock, msgs := listenNotify(t)
	startService := func() *daemon {
		t.Helper()
		cmd := exec.Command(start[0], start[1:]...)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
		d := startCmd(t, cmd, src, mnt)
		t.Cleanup(d.cleanup)
		if m := nextNotify(t, msgs); m.text != "READY=1" || m.pid != d.cmd.Process.Pid {
			t.Fatalf("%q from pid %d, want READY=1 from %d\nstderr: %s", m.text, m.pid, d.cmd.Process.Pid, d.stderr)
		}
		if got := run(t, "cat", filepath.Join(mnt, "scanA/files.json")); got != "files of scanA\n" {
			t.Fatalf("cat after READY=1: %q", got)
		}
		return d
	}

	first := startService()
	if !strings.Contains(first.stderr.String(), "info_files=false") || !strings.Contains(first.stderr.String(), "timeout=5s") {
		t.Errorf("the OPTIONS of the environment file did not arrive:\n%s", first.stderr)
	}
	killServer(t, first)

	second := startService()
	if !strings.Contains(second.stderr.String(), "unmounted a dead mount") {
		t.Errorf("the restarted service did not clear the dead mount:\n%s", second.stderr)
	}

	second.allowExit = true
	run(t, stop[0], stop[1:]...)
	if m := nextNotify(t, msgs); m.text != "STOPPING=1" || m.pid != second.cmd.Process.Pid {
		t.Fatalf("after ExecStop: %q from pid %d, want STOPPING=1", m.text, m.pid)
	}
	if code := second.waitExit(t); code != mountcmd.ExitOK {
		t.Fatalf("the service exited %d after ExecStop\n%s", code, second.stderr)
	}
}

// readEnvFile reads a systemd EnvironmentFile of KEY=VALUE and KEY="VALUE" lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		env[k] = strings.Trim(v, `"`)
	}
	must(t, sc.Err())
	return env
}

// unitCommand returns the argv of the unit's KEY= line (ExecStart,
// ExecStop) as systemd builds it: %f is the mount point, ${VAR} one word,
// $VAR split on white space; /usr/local/bin is DESTDIR's.
func unitCommand(t *testing.T, unit, key string, env map[string]string, mnt, dest string) []string {
	t.Helper()
	b, err := os.ReadFile(unit)
	must(t, err)
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+"=") {
			if line != "" {
				t.Fatalf("%s: two %s= lines", unit, key)
			}
			line = strings.TrimLeft(strings.TrimPrefix(l, key+"="), "-") // "-": failure is ignored
		}
	}
	if line == "" {
		t.Fatalf("%s: no %s= line", unit, key)
	}
	var argv []string
	for _, w := range strings.Fields(line) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			argv = append(argv, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		default:
			w = strings.ReplaceAll(w, "%f", mnt)
			if strings.ContainsAny(w, "%$") {
				t.Fatalf("%s: %s= uses %q, which this test does not expand", unit, key, w)
			}
			argv = append(argv, w)
		}
	}
	if !strings.HasPrefix(argv[0], "/usr/local/bin/") {
		t.Fatalf("%s: %s= runs %s, not the installed /usr/local/bin/scanlockfs", unit, key, argv[0])
	}
	argv[0] = filepath.Join(dest, argv[0])
	return argv
}

// verifyUnit runs systemd-analyze verify on an instance of the template,
// with the installed binary as /usr/local/bin/scanlockfs (bind-mounted in
// a private mount namespace, so the machine is left alone: verify checks
// that the commands exist).
func verifyUnit(t *testing.T, unit, instance, bindir string) {
	t.Helper()
	for _, p := range []string{"systemd-analyze", "unshare"} {
		if _, err := exec.LookPath(p); err != nil || os.Geteuid() != 0 {
			t.Logf("the unit is not verified: needs root and %s", p)
			return
		}
	}
	dir := t.TempDir()
	must(t, os.Symlink(unit, filepath.Join(dir, "scanlockfs@.service")))
	inst := filepath.Join(dir, "scanlockfs@"+instance+".service")
	must(t, os.Symlink("scanlockfs@.service", inst))
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /usr/local/bin && exec systemd-analyze verify "$2"`, "sh", bindir, inst)
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
