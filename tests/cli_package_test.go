package tests

import (
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
