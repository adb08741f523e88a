package mountcmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

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

// editDistance picks the "did you mean" suggestion for a mistyped command.
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
