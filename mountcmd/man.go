package mountcmd

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// The manual page, scanlockfs(1), is rendered from the command
// definitions (names, usage lines, descriptions with their examples,
// flags with their defaults), the -o option tables of mount_options.go
// and the exit codes below, so that it cannot drift from --help. The
// hidden command `scanlockfs man` prints it; scripts/install and
// scripts/package install its output. It is written in roff by hand
// rather than through urfave/cli's Markdown: the descriptions are laid
// out in lines and columns that Markdown would reflow.

// exitCodeDocs are the exit codes of the EXIT STATUS section (the README
// has the same table).
var exitCodeDocs = []struct{ code, meaning string }{
	{fmt.Sprint(ExitOK), "success; mount: unmounted cleanly; status: the query worked (also when everything is free)"},
	{fmt.Sprint(ExitInternal), "internal error"},
	{fmt.Sprint(ExitUsage), "usage: bad or missing arguments or options, invalid scan id, unknown command or flag"},
	{fmt.Sprint(ExitTimeout), "run: the lock was not granted before --timeout"},
	{fmt.Sprint(ExitBusy), "run --nonblock: the scan is held; unmount: the mount is busy (the programs keeping it busy are listed)"},
	{fmt.Sprint(ExitMount), "mount: the mount could not be set up (mount point unusable, dead mount without --recover, FUSE refused), or was stopped by a second signal with files open; unmount failed"},
	{fmt.Sprint(ExitNotFound), "SOURCE, MOUNTPOINT or the mount does not exist"},
	{"N", "run: COMMAND's own exit status"},
	{fmt.Sprintf("%d, %d", ExitCannotExec, ExitCommandNotFound), "run: COMMAND is not executable, not found"},
	{fmt.Sprintf("%d+N", ExitSignalBase), "run: COMMAND was killed by signal N, or run was, while waiting for the lock"},
}

// fileDocs are the FILES section.
var fileDocs = []struct{ path, meaning string }{
	{"SOURCE/.locks/SCAN.lock", "the lock of scan SCAN, taken with flock(2): shared to read, exclusive to write (plantdb's protocol)"},
	{"SOURCE/.locks/SCAN.info", "JSON: who holds SCAN (plantdb's fields scan_id, lock_type, user, timestamp, pid, thread_id, and owner, note, hostname, tool)"},
	{"SOURCE/.locks/SCAN.gate", "set by a writer of ours that had to wait, so that new readers queue behind it"},
	{"MOUNTPOINT/.locks/SCAN.info", "virtual, read-only: every holder and waiter of SCAN through the mount and on SOURCE, in JSON"},
	{"MOUNTPOINT/.locks/status.json", "virtual: every scan with activity, with the mount's source, lock directory, pid and timeout"},
	{"MOUNTPOINT/.locks/metrics", "virtual: Prometheus text format"},
	{"/etc/fstab", "a line of type fuse.scanlockfs mounts at boot through mount.fuse3(8), which finds scanlockfs in PATH"},
	{"/lib/systemd/system/scanlockfs@.service", "the unit template (Type=notify); an instance per mount point, named by systemd-escape --path MOUNTPOINT"},
	{"/etc/scanlockfs/INSTANCE.env", "SOURCE= and OPTIONS= of the unit instance INSTANCE"},
}

// manCommand is the hidden `scanlockfs man`.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Hidden:    true,
		Usage:     "print the manual page scanlockfs(1) in roff (man -l to read it)",
		UsageText: "scanlockfs man | man -l -",
		Action: func(c *cli.Context) error {
			if c.NArg() != 0 {
				return usageErrorf("man takes no arguments")
			}
			return writeMan(c.App.Writer, c.App)
		},
	}
}

// roffText escapes s for roff: backslashes, and a leading dot or apostrophe
// that would make a line a request; "-" becomes "\-" (a real minus, as
// man pages write options).
func roffText(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	var b strings.Builder
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			b.WriteByte('\n')
		}
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			b.WriteString(`\&`)
		}
		b.WriteString(line)
	}
	return b.String()
}

// roffBlock writes text as it is laid out (no filling, no adjusting).
func roffBlock(w io.Writer, text string) {
	fmt.Fprintf(w, ".nf\n%s\n.fi\n", roffText(strings.TrimRight(text, "\n")))
}

var placeholder = regexp.MustCompile("`([^`]*)`")

// flagDoc is the term and the text of a flag, as --help shows them.
func flagDoc(f cli.Flag) (term, text string) {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return "", ""
	}
	usage := df.GetUsage()
	arg := ""
	if df.TakesValue() {
		arg = "value"
		if m := placeholder.FindStringSubmatch(usage); m != nil {
			arg = m[1]
		}
	}
	usage = placeholder.ReplaceAllString(usage, "$1")
	var names []string
	for _, n := range f.Names() {
		dash := "--"
		if len(n) == 1 {
			dash = "-"
		}
		names = append(names, `\fB`+roffText(dash+n)+`\fR`)
	}
	term = strings.Join(names, ", ")
	if arg != "" {
		term += ` \fI` + roffText(arg) + `\fR`
	}
	if def := df.GetDefaultText(); def != "" {
		usage += " (default: " + def + ")"
	} else if v := df.GetValue(); df.TakesValue() && v != "" {
		usage += " (default: " + v + ")"
	} else if bf, ok := f.(*cli.BoolFlag); ok && bf.Value {
		usage += " (default: true)"
	}
	return term, roffText(usage)
}

func writeFlags(w io.Writer, flags []cli.Flag) {
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		term, text := flagDoc(f)
		if term == "" {
			continue
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", term, text)
	}
}

// writeMan renders the manual page of app.
func writeMan(w io.Writer, app *cli.App) error {
	fmt.Fprintf(w, ".\\\" scanlockfs(1), generated by 'scanlockfs man' from the command definitions; do not edit.\n")
	fmt.Fprintf(w, ".TH SCANLOCKFS 1 \"\" \"scanlockfs %s\" \"User Commands\"\n", roffText(app.Version))
	fmt.Fprintf(w, ".SH NAME\nscanlockfs \\- %s\n", roffText(app.Usage))

	visible := make([]*cli.Command, 0, len(app.Commands))
	for _, c := range app.Commands {
		if !c.Hidden && c.Name != "help" {
			visible = append(visible, c)
		}
	}
	fmt.Fprintf(w, ".SH SYNOPSIS\n.nf\n")
	for _, c := range visible {
		for _, l := range strings.Split(c.UsageText, "\n") {
			fmt.Fprintf(w, "%s\n", roffText(strings.TrimSpace(l)))
		}
	}
	fmt.Fprintf(w, ".fi\n")

	fmt.Fprintf(w, ".SH DESCRIPTION\n")
	fmt.Fprintf(w, "%s\n.PP\n", roffText("scanlockfs puts plantdb's per-scan shared/exclusive locks (SOURCE/.locks/SCAN.lock, taken with flock(2)) "+
		"under every program that uses a scan database: through a FUSE mount, a program that opens a file of scan S for "+
		"reading holds S's shared lock until it closes it, one that writes holds S's exclusive lock."))
	roffBlock(w, app.Description)

	writeCommands(w, visible)
	fmt.Fprintf(w, ".SH \"GLOBAL OPTIONS\"\n")
	writeFlags(w, app.VisibleFlags())

	writeMountOptions(w)
	fmt.Fprintf(w, ".SH \"EXIT STATUS\"\n")
	for _, e := range exitCodeDocs {
		fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", roffText(e.code), roffText(e.meaning))
	}
	fmt.Fprintf(w, ".SH ENVIRONMENT\n.TP\n\\fBNOTIFY_SOCKET\\fR\n%s\n",
		roffText("set by systemd for Type=notify units: mount sends READY=1 once it serves, and STOPPING=1"))
	fmt.Fprintf(w, ".SH FILES\n")
	for _, f := range fileDocs {
		fmt.Fprintf(w, ".TP\n\\fI%s\\fR\n%s\n", roffText(f.path), roffText(f.meaning))
	}
	_, err := fmt.Fprintf(w, ".SH \"SEE ALSO\"\n%s\n", roffText("flock(1), flock(2), fusermount3(1), mount.fuse3(8), fstab(5), systemd.unit(5)"))
	return err
}

// writeCommands writes the COMMANDS section.
func writeCommands(w io.Writer, visible []*cli.Command) {
	fmt.Fprintf(w, ".SH COMMANDS\n")
	for _, c := range visible {
		names := strings.Join(c.Names(), ", ")
		fmt.Fprintf(w, ".SS \"%s\"\n%s\n.PP\n", roffText(names), roffText(c.Usage))
		roffBlock(w, c.UsageText)
		if c.Description != "" {
			fmt.Fprintf(w, ".PP\n")
			roffBlock(w, c.Description)
		}
		if len(c.Flags) > 0 {
			fmt.Fprintf(w, ".PP\nOptions of %s:\n", roffText(c.Name))
			writeFlags(w, c.Flags)
		}
	}

}

// writeMountOptions writes the MOUNT OPTIONS section, from the tables of
// mount_options.go.
func writeMountOptions(w io.Writer) {
	fmt.Fprintf(w, ".SH \"MOUNT OPTIONS\"\n%s\n", roffText("The options of mount -o and of the options field of an /etc/fstab line "+
		"of type fuse.scanlockfs; each sets the flag of the same meaning."))
	opts := make([]string, 0, len(optionFlags))
	for o := range optionFlags {
		opts = append(opts, o)
	}
	sort.Strings(opts)
	for _, o := range opts {
		term := o + "=VALUE"
		if boolOptions[o] {
			term = o + "[=true|false]"
		}
		fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", roffText(term), roffText("as --"+optionFlags[o]))
	}
	fmt.Fprintf(w, ".TP\n\\fBrw\\fR\n%s\n", roffText("undoes an earlier ro (the last one given wins)"))
	fmt.Fprintf(w, ".TP\n\\fBdefault_permissions\\fR\n%s\n", roffText("accepted with allow_other, which turns it on"))
	ignored := make([]string, 0, len(ignoredOptions))
	for o := range ignoredOptions {
		ignored = append(ignored, o)
	}
	sort.Strings(ignored)
	fmt.Fprintf(w, ".PP\n%s\n", roffText("Accepted without effect (mount(8) and mount.fuse3 pass them): "+strings.Join(ignored, ", ")+
		", and comment=, fsname=, subtype= and the x-* options (x-systemd.*)."))
	refused := make([]string, 0, len(refusedOptions))
	for o := range refusedOptions {
		refused = append(refused, o)
	}
	sort.Strings(refused)
	fmt.Fprintf(w, ".PP\nRefused, because scanlockfs cannot honour them:\n")
	for _, o := range refused {
		fmt.Fprintf(w, ".TP\n\\fB%s\\fR\n%s\n", roffText(o), roffText(refusedOptions[o]))
	}
	fmt.Fprintf(w, ".PP\n%s\n", roffText("Unknown options are refused (exit status 2)."))

}
