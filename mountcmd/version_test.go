package mountcmd

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestVersionOfRealBuild builds the scanlockfs binary the way a release
// would (test binaries carry no module list) and checks each line against
// what the build used.
func TestVersionOfRealBuild(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	fuseVersion, err := exec.Command(goTool, "list", "-m", "-f", "{{.Version}}", goFuseModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", goFuseModule, err)
	}
	bin := filepath.Join(t.TempDir(), "scanlockfs")
	if out, err := exec.Command(goTool, "build", "-ldflags", "-X scanlockfs/mountcmd.Version=v9.8.7", "-o", bin, "scanlockfs").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "scanlockfs v9.8.7\ngo " + runtime.Version() + "\ngo-fuse " + strings.TrimSpace(string(fuseVersion)) + "\n"
	if string(out) != want {
		t.Fatalf("version printed\n%s\nwant\n%s", out, want)
	}
}
