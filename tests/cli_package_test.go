package tests

import (
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// scripts/package builds scanlockfs_VERSION_ARCH.deb with the binary, the
// man page, the completions and the unit; dpkg-deb reads it back. As
// root, on a machine where no scanlockfs package is installed and nothing
// is in the way, the package installs (dpkg -i: fuse3 is there, so no
// network is needed), works, and dpkg --purge removes every file it
// brought.
func TestPackageDeb(t *testing.T) {
	// Not parallel: its build and compression would slow the timed tests
	// that run in parallel (the demo's own limit).
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: dpkg-deb is missing")
		}
		t.Skip("dpkg-deb is missing")
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "package"), out)
	cmd.Env = append(os.Environ(), "SCANLOCKFS_BIN="+binScanlockfs)
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/package: %v\n%s", err, res)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "scanlockfs_*_*.deb"))
	if len(debs) != 1 || strings.TrimSpace(string(res)) != debs[0] {
		t.Fatalf("scripts/package made %q and printed %q", debs, res)
	}
	deb := debs[0]

	describe := strings.TrimSpace(run(t, filepath.Join(repoRoot(t), "scripts", "version")))
	info := run(t, "dpkg-deb", "--info", deb)
	version := regexp.MustCompile(`(?m)^ Version: (\S+)$`).FindStringSubmatch(info)
	if version == nil || filepath.Base(deb) != "scanlockfs_"+version[1]+"_"+strings.TrimSpace(run(t, "dpkg", "--print-architecture"))+".deb" {
		t.Fatalf("the file name %s does not carry the package's version:\n%s", deb, info)
	}
	if !regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`).MatchString(version[1]) {
		t.Errorf("version %q is not a Debian version", version[1])
	}
	for _, w := range []string{" Package: scanlockfs\n", "\n Depends: fuse3", "Built from " + describe + "."} {
		if !strings.Contains(info, w) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", w, info)
		}
	}
	contents := run(t, "dpkg-deb", "--contents", deb)
	var files []string
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/scanlockfs",
		"-rw-r--r-- root/root .* ./usr/share/man/man1/scanlockfs.1.gz",
		"-rw-r--r-- root/root .* ./usr/share/bash-completion/completions/scanlockfs",
		"-rw-r--r-- root/root .* ./usr/share/zsh/vendor-completions/_scanlockfs",
		"-rw-r--r-- root/root .* ./usr/share/fish/vendor_completions.d/scanlockfs.fish",
		"-rw-r--r-- root/root .* ./lib/systemd/system/scanlockfs@.service",
	} {
		m := regexp.MustCompile(`(?m)^` + want + `$`).FindString(contents)
		if m == "" {
			t.Errorf("dpkg-deb --contents lacks %s:\n%s", want, contents)
			continue
		}
		files = append(files, m[strings.Index(m, "./")+1:])
	}
	if strings.Contains(contents, "/usr/local/") {
		t.Errorf("the package puts files in /usr/local:\n%s", contents)
	}
	x := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, x)
	if unit, _ := os.ReadFile(filepath.Join(x, "lib/systemd/system/scanlockfs@.service")); !strings.Contains(string(unit), "ExecStart=/usr/bin/scanlockfs mount") ||
		strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("the packaged unit does not run /usr/bin/scanlockfs:\n%s", unit)
	}
	if t.Failed() {
		return
	}

	// Install and remove, as root, only where that changes nothing of the
	// machine's own: no scanlockfs package, no /usr/bin/scanlockfs.
	if os.Geteuid() != 0 {
		t.Log("not root: install and removal not tried")
		return
	}
	if err := exec.Command("dpkg-query", "-W", "scanlockfs").Run(); err == nil {
		t.Log("a scanlockfs package is installed here: install and removal not tried")
		return
	}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			t.Logf("%s exists: install and removal not tried", f)
			return
		}
	}
	if err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "fuse3").Run(); err != nil {
		t.Log("fuse3 is not installed: dpkg -i would fail on the dependency; not tried")
		return
	}
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "scanlockfs").Run() })
	// --no-triggers: man-db's index update (10 s) runs once, at the purge.
	if res, err := exec.Command("dpkg", "--no-triggers", "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, res)
	}
	if got := run(t, "/usr/bin/scanlockfs", "version"); !strings.HasPrefix(got, "scanlockfs ") {
		t.Errorf("the installed scanlockfs: %q", got)
	}
	if page, err := exec.Command("man", "-w", "scanlockfs").Output(); err == nil && strings.TrimSpace(string(page)) != "/usr/share/man/man1/scanlockfs.1.gz" {
		t.Errorf("man -w scanlockfs finds %q", page)
	}
	if res, err := exec.Command("dpkg", "--purge", "scanlockfs").CombinedOutput(); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, res)
	}
	for _, f := range files {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s is left after dpkg --purge", f)
		}
	}
	for _, d := range []string{"/usr/share/doc/scanlockfs"} {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("%s is left after dpkg --purge", d)
		}
	}
	if res, err := exec.Command("dpkg", "--audit").CombinedOutput(); err != nil || len(res) > 0 {
		t.Errorf("dpkg --audit after the purge: %v\n%s", err, res)
	}
}

// scripts/install installs the man page generated by 'scanlockfs man'
// where man(1) finds it, and man -l shows it.
func TestCLIInstallInstallsManPage(t *testing.T) {
	t.Parallel()
	dest := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "install"))
	cmd.Env = append(os.Environ(), "DESTDIR="+dest, "SCANLOCKFS_BIN="+binScanlockfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/install: %v\n%s", err, out)
	}
	page := filepath.Join(dest, "usr/local/share/man/man1/scanlockfs.1.gz")
	f, err := os.Open(page)
	if err != nil {
		t.Fatalf("no man page installed: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(t, err)
	got, err := io.ReadAll(zr)
	must(t, err)
	want, err := exec.Command(binScanlockfs, "man").Output()
	must(t, err)
	if string(got) != string(want) {
		t.Fatal("the installed man page is not what 'scanlockfs man' prints")
	}
	if _, err := exec.LookPath("man"); err != nil {
		t.Skip("no man(1) to render it")
	}
	c := exec.Command("man", "-l", page)
	c.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat")
	out, err := c.Output()
	if err != nil || !strings.Contains(string(out), "SCANLOCKFS(1)") || !strings.Contains(string(out), "EXIT STATUS") {
		t.Fatalf("man -l %s: %v\n%s", page, err, out)
	}
}

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
