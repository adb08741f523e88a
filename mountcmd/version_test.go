package mountcmd

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// buildScanlockfs builds the real binary with extra go build arguments
// (test binaries carry neither a module list nor VCS information).
func buildScanlockfs(t *testing.T, args ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	bin := filepath.Join(t.TempDir(), "scanlockfs")
	cmd := exec.Command(goTool, append(append([]string{"build"}, args...), "-o", bin, "scanlockfs")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func output(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", bin, strings.Join(args, " "), err)
	}
	return string(out)
}

// TestVersionOfRealBuild builds the scanlockfs binary the way the scripts
// do (-X with what scripts/version prints) and checks each line against
// what the build used, and that --version says the same.
func TestVersionOfRealBuild(t *testing.T) {
	t.Parallel()
	want, err := exec.Command("../scripts/version").Output()
	if err != nil {
		t.Fatalf("scripts/version: %v", err)
	}
	v := strings.TrimSpace(string(want))
	if !regexp.MustCompile(`^(v?\d[\w.]*(-\d+-g[0-9a-f]+)?|[0-9a-f]{7,})(-dirty)?$|^unknown$`).MatchString(v) {
		t.Fatalf("scripts/version printed %q, not git describe's format", v)
	}
	bin := buildScanlockfs(t, "-ldflags", "-X scanlockfs/mountcmd.Version="+v)
	fuseVersion, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", goFuseModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", goFuseModule, err)
	}
	got := output(t, bin, "version")
	wantOut := "scanlockfs " + v + "\ngo " + runtime.Version() + "\ngo-fuse " + strings.TrimSpace(string(fuseVersion)) + "\n"
	if got != wantOut {
		t.Fatalf("version printed\n%s\nwant\n%s", got, wantOut)
	}
	if got := output(t, bin, "--version"); got != "scanlockfs "+v+"\n" {
		t.Fatalf("--version printed %q, want %q", got, "scanlockfs "+v+"\n")
	}
}

// TestVersionOfPlainBuild: without -X, a build says the commit it was
// built from in git describe's form (when Go stamped it: not in a git
// worktree, nor with -buildvcs=false), else "unknown"; --version says the
// same.
func TestVersionOfPlainBuild(t *testing.T) {
	t.Parallel()
	bin := buildScanlockfs(t, "-buildvcs=auto")
	want := "unknown"
	info, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	if m := regexp.MustCompile(`(?m)^\s*build\s+vcs\.revision=([0-9a-f]+)$`).FindSubmatch(info); m != nil {
		want = string(m[1][:7])
		if regexp.MustCompile(`(?m)^\s*build\s+vcs\.modified=true$`).Match(info) {
			want += "-dirty"
		}
	}
	line := strings.SplitN(output(t, bin, "version"), "\n", 2)[0]
	if line != "scanlockfs "+want {
		t.Fatalf("version's first line is %q, want %q", line, "scanlockfs "+want)
	}
	if got := output(t, bin, "--version"); got != line+"\n" {
		t.Fatalf("--version printed %q, want %q", got, line)
	}
}
