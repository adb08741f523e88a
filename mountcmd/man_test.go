package mountcmd

import (
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func manPage(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	app := NewApp(io.Discard, io.Discard, nil)
	if err := writeMan(&b, app); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestManPageCoversEverything: the page names every visible command and
// each of its visible flags, every -o option, every exit code and the
// files, so that it cannot fall behind the command definitions.
func TestManPageCoversEverything(t *testing.T) {
	page := manPage(t)
	for _, sec := range []string{".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH COMMANDS", `.SH "MOUNT OPTIONS"`,
		`.SH "EXIT STATUS"`, ".SH ENVIRONMENT", ".SH FILES", `.SH "SEE ALSO"`} {
		if !strings.Contains(page, "\n"+sec+"\n") {
			t.Errorf("no section %s", sec)
		}
	}
	for _, c := range newCommands(nil) {
		if c.Hidden {
			continue
		}
		if !strings.Contains(page, `.SS "`+roffText(strings.Join(c.Names(), ", "))+`"`) {
			t.Errorf("command %s has no subsection", c.Name)
		}
		for _, f := range c.Flags {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			if !strings.Contains(page, `\fB`+roffText("--"+f.Names()[0])+`\fR`) {
				t.Errorf("command %s: flag --%s is not in the page", c.Name, f.Names()[0])
			}
		}
	}
	for o := range optionFlags {
		if !strings.Contains(page, `\fB`+roffText(o)) {
			t.Errorf("-o option %s is not in the page", o)
		}
	}
	for o := range refusedOptions {
		if !strings.Contains(page, `\fB`+roffText(o)+`\fR`) {
			t.Errorf("refused option %s is not in the page", o)
		}
	}
	for _, code := range []string{"0", "1", "2", "3", "4", "5", "6", "126, 127", "128+N"} {
		if !strings.Contains(page, ".TP\n\\fB"+roffText(code)+"\\fR\n") {
			t.Errorf("exit code %s is not in the page", code)
		}
	}
	for _, f := range []string{"SOURCE/.locks/SCAN.lock", "MOUNTPOINT/.locks/status.json", "/etc/fstab", "/lib/systemd/system/scanlockfs@.service"} {
		if !strings.Contains(page, roffText(f)) {
			t.Errorf("file %s is not in the page", f)
		}
	}
	if strings.Contains(page, "\n.  ") || strings.Contains(page, "\n'") {
		t.Error("a text line starts with a roff control character")
	}
}

// TestManPageRenders: groff formats the page without a warning, and man
// -l shows it, when they are installed (Debian's man-db and groff-base).
func TestManPageRenders(t *testing.T) {
	page := manPage(t)
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("no groff: the structure is checked by TestManPageCoversEverything")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff -man -ww: %v\n%s", err, out)
	}
	man, err := exec.LookPath("man")
	if err != nil {
		return
	}
	cmd = exec.Command(man, "-l", "-")
	cmd.Env = []string{"MANWIDTH=100", "MANPAGER=cat", "PAGER=cat", "PATH=/usr/bin:/bin"}
	cmd.Stdin = strings.NewReader(page)
	text, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l: %v", err)
	}
	for _, w := range []string{"scanlockfs - scan locking", "EXIT STATUS", "--nonblock, -n", "scanlockfs run --shared|--exclusive", "timeout=VALUE"} {
		if !bytes.Contains(text, []byte(w)) {
			t.Errorf("man -l output lacks %q:\n%s", w, text)
		}
	}
}
