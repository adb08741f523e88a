package mountcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"scanlockfs/lockmgr"
	"scanlockfs/scanstatus"
)

// statusCommand is `scanlockfs status`.
func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show who holds and who waits for the scan locks of SOURCE",
		ArgsUsage: "SOURCE [SCAN...]",
		UsageText: "scanlockfs status [--json] [--lock-dir DIR] [--log-level L] SOURCE [SCAN...]",
		Description: "Reads /proc/locks and the .info files in SOURCE/.locks; changes nothing on disk, needs only\n" +
			"read access to SOURCE, and works with or without a running mount (the programs using a\n" +
			"running mount of SOURCE are shown in place of its daemon, from MOUNTPOINT/.locks/status.json,\n" +
			"waiters included, with where \"mount\" and their path). Without SCAN, lists every scan that is locked or awaited right now; with\n" +
			"SCAN, shows those scans, free or not.\n" +
			"SINCE is known when the holder wrote the scan's .info file (scanlockfs and plantdb do).\n" +
			"USER is the real user of the holding process (from /proc). The user an .info file names is only\n" +
			"a claim (any member of the lock directory's group can write one): it is shown as \"NAME (claimed)\"\n" +
			"where it differs or the process is not visible, and as claimed_user in --json. Notes are cut to\n" +
			"256 bytes in the table.\n" +
			"Waiters show when they block in flock(2) (flock(1), plantdb's blocking mode); programs that\n" +
			"poll for the lock, such as 'scanlockfs run', are not visible while they wait.\n\n" +
			"--json prints one document (all keys always present; unknown times are null; times are\n" +
			"RFC 3339 with milliseconds), with the scans and entries of MOUNTPOINT/.locks/status.json:\n" +
			"  {\"source\": DIR, \"lock_dir\": DIR, \"time\": RFC3339,\n" +
			"   \"scans\": [{\"scan_id\": ID, \"state\": \"free\"|\"shared\"|\"exclusive\",\n" +
			"              \"holders\": [ENTRY...], \"waiters\": [ENTRY...], \"info_error\": TEXT, \"lock_error\": TEXT}]}\n" +
			"  ENTRY = {\"mode\": \"shared\"|\"exclusive\", \"pid\": N, \"command\": NAME, \"user\": NAME,\n" +
			"           \"claimed_user\": NAME, \"path\": PATH, \"path_hidden\": BOOL, \"where\": \"source\"|\"mount\",\n" +
			"           \"host\": \"\", \"since\": RFC3339|null, \"since_unix\": SECONDS|null, \"for_seconds\": SECONDS|null,\n" +
			"           \"owner\": KEY, \"note\": TEXT, \"note_hidden\": BOOL,\n" +
			"           \"held_for_seconds\" (holders) or \"waited_seconds\" (waiters): SECONDS|null}\n\n" +
			"Exit codes: 0 the query worked (also when everything is free); 2 bad arguments or scan id;\n" +
			"6 SOURCE missing; 1 internal error.\n\n" +
			"Examples:\n" +
			"  scanlockfs status /data/db                      # everything locked right now\n" +
			"  scanlockfs status /data/db scan_001 scan_002    # these two scans\n" +
			"  watch -n1 scanlockfs status /data/db\n" +
			"  scanlockfs status --json /data/db | jq -r '.scans[] | select(.state==\"exclusive\") | .scan_id'",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts (schema above) instead of a table"},
			lockDirFlag(),
			logLevelFlag("warn"),
			logFormatFlag(),
		}, etcdFlags()...),
		BashComplete: completeScanArgs,
		Action:       statusAction,
	}
}

func statusAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return usageErrorf("status: missing SOURCE: scanlockfs status [--json] SOURCE [SCAN...]")
	}
	scans, err := scanArgs("status", args[1:], "scanlockfs status [--json] SOURCE [SCAN...]")
	if err != nil {
		return err
	}
	for _, id := range scans {
		if err := lockmgr.ValidateScanID(id); err != nil {
			return usageErrorf("status: SCAN: %w: give the name of a scan folder in SOURCE", err)
		}
	}
	source, err := sourceDir(args[0])
	if err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	source = mountpointToSource(c.App.ErrWriter, "status", source)
	lockDir := filepath.Join(source, lockmgr.LockDirName)
	if d := c.String(flagLockDir); d != "" {
		if lockDir, err = filepath.Abs(d); err != nil {
			return exitf(ExitInternal, "status: --lock-dir %s: %w", d, err)
		}
	}
	eopts, closeEtcd, err := etcdOptions(c)
	defer closeEtcd()
	if err != nil {
		return err
	}
	now := time.Now()
	list, err := queryStatus(source, lockDir, scans, now, log, eopts...)
	if err != nil {
		return err
	}
	addMountHolders(c.App.ErrWriter, source, list)
	for _, id := range scans {
		if _, err := os.Stat(filepath.Join(source, id)); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(c.App.ErrWriter, "scanlockfs: note: %s has no scan folder %s (misspelt?)\n", printable(source), printable(id))
		}
	}
	for _, s := range list {
		if s.InfoError != "" {
			fmt.Fprintf(c.App.ErrWriter, "scanlockfs: note: scan %s: %s\n", printable(s.ScanID), printable(s.InfoError))
		}
		if s.LockError != "" {
			fmt.Fprintf(c.App.ErrWriter, "scanlockfs: warning: scan %s: %s\n", printable(s.ScanID), printable(s.LockError))
		}
		if s.ClusterError != "" {
			fmt.Fprintf(c.App.ErrWriter, "scanlockfs: warning: scan %s: holders on other hosts unknown: %s\n", printable(s.ScanID), printable(s.ClusterError))
		}
	}
	if c.Bool("json") {
		return writeStatusJSON(c.App.Writer, source, lockDir, list, now)
	}
	return writeStatusTable(c.App.Writer, source, list, now)
}

// queryStatus asks lockmgr, without changing anything on disk, and
// converts its answer as of now: a missing lock directory means nothing
// is locked (and is not created), and the manager neither purges nor
// writes .info files.
func queryStatus(source, lockDir string, scans []string, now time.Time, log logrus.FieldLogger, eopts ...lockmgr.Option) ([]scanstatus.Scan, error) {
	st, err := os.Stat(lockDir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(eopts) == 0:
		var list []scanstatus.Scan
		for _, id := range scans {
			list = append(list, scanstatus.Free(id))
		}
		return list, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, exitf(ExitInternal, "status: lock directory %s: %w", lockDir, err)
	case err == nil && !st.IsDir():
		return nil, exitf(ExitInternal, "status: lock directory %s is not a directory (move it away, or give --lock-dir)", lockDir)
	}
	// Read-only: users who may only read SOURCE can ask too.
	m, err := lockmgr.New(source, append([]lockmgr.Option{lockmgr.WithLockDir(lockDir), lockmgr.WithReadOnly(true), lockmgr.WithLogger(log)}, eopts...)...)
	if err != nil {
		return nil, exitf(ExitInternal, "status: %w", err)
	}
	defer m.Close()
	if len(scans) == 0 {
		list, err := m.List()
		if err != nil {
			return nil, exitf(clusterExit(err, ExitInternal), "status: %w", err)
		}
		return scanstatus.ScansOf(list, now), nil
	}
	list := make([]*lockmgr.ScanStatus, 0, len(scans))
	for _, id := range scans {
		s, err := m.Status(id)
		if err != nil {
			return nil, exitf(ExitInternal, "status: scan %s: %w", id, err)
		}
		list = append(list, s)
	}
	return scanstatus.ScansOf(list, now), nil
}

// writeStatusJSON prints the --json document: a scanstatus.SourceDoc.
func writeStatusJSON(w io.Writer, source, lockDir string, list []scanstatus.Scan, now time.Time) error {
	doc := scanstatus.SourceDoc{Source: source, LockDir: lockDir, Time: scanstatus.Time{Time: now}, Scans: list}
	if doc.Scans == nil {
		doc.Scans = []scanstatus.Scan{}
	}
	_, err := w.Write(scanstatus.Encode(&doc))
	return err
}

func writeStatusTable(w io.Writer, source string, list []scanstatus.Scan, now time.Time) error {
	if len(list) == 0 {
		_, err := fmt.Fprintf(w, "no scan of %s is locked or awaited right now\n", source)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SCAN\tSTATE\tMODE\tPID\tCOMMAND\tUSER\tSINCE\tWHERE\tNOTE")
	row := func(s *scanstatus.Scan, e *scanstatus.Entry, waiting bool) {
		mode := e.Mode
		if waiting {
			mode += " (waiting)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", printable(s.ScanID), s.State, mode, e.PID,
			dash(printable(e.Command)), dash(userText(e)), sinceText(e.Since, now), dash(string(e.Where)), dash(oneLine(noteText(e))))
	}
	for i := range list {
		s := &list[i]
		if !s.Active() {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", printable(s.ScanID), s.State)
			continue
		}
		for j := range s.Holders {
			row(s, &s.Holders[j].Entry, false)
		}
		for j := range s.Waiters {
			row(s, &s.Waiters[j].Entry, true)
		}
	}
	return tw.Flush()
}

// sinceText is "2025-11-28T09:01:02.250+01:00 (for 12s)", or "-" if
// unknown.
func sinceText(t *scanstatus.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(scanstatus.Layout) + " (for " + shortDuration(now.Sub(t.Time)) + ")"
}

// hiddenText stands for what the mount hides from the user asking.
const hiddenText = "(hidden from you)"

// noteText is the NOTE column: the path of a program of a mount, the
// note of a process on SOURCE, or hiddenText.
func noteText(e *scanstatus.Entry) string {
	switch {
	case e.PathHidden || e.NoteHidden:
		return hiddenText
	case e.Path != "":
		return e.Path
	}
	return e.Note
}

func shortDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	}
	return d.Truncate(time.Second).String()
}

// holderSummary says in one line who holds a scan, for error messages:
// "held exclusive by pid 1234 (scanlockfs, user alice, for 12s, run: make)".
func holderSummary(ls *lockmgr.ScanStatus) string {
	now := time.Now()
	st := scanstatus.FromLockmgr(ls, now)
	if len(st.Holders) == 0 {
		return "no holder is visible now (it was released a moment ago, or is held on another machine)"
	}
	parts := make([]string, 0, len(st.Holders))
	for i := range st.Holders {
		h := &st.Holders[i].Entry
		var d []string
		if h.Command != "" {
			d = append(d, h.Command)
		}
		if u := userText(h); u != "" {
			d = append(d, "user "+u)
		}
		if h.Since != nil {
			d = append(d, "for "+shortDuration(now.Sub(h.Since.Time)))
		}
		if n := noteText(h); n != "" {
			d = append(d, oneLine(n))
		}
		p := "pid " + strconv.Itoa(h.PID)
		if h.Host != "" {
			p += " on " + printable(h.Host)
		}
		if len(d) > 0 {
			p += " (" + strings.Join(d, ", ") + ")"
		}
		parts = append(parts, p)
	}
	s := "held " + st.State + " by " + strings.Join(parts, ", ")
	if n := len(st.Waiters); n > 0 {
		s += fmt.Sprintf("; %d more waiting", n)
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// userText is the holder's user for the table: the real user, and the
// user its .info file claims where that differs (any member of the lock
// directory's group can write the file, so it is never shown as fact).
func userText(h *scanstatus.Entry) string {
	user, claimed := printable(h.User), printable(h.ClaimedUser)
	switch {
	case claimed == "" || claimed == user:
		return user
	case user == "":
		return claimed + " (claimed)"
	}
	return user + ", " + claimed + " (claimed)"
}

// maxNoteLen bounds a note in the table: notes come from .info files
// that other users write.
const maxNoteLen = 256

// oneLine keeps notes (which come from .info files other programs wrote)
// from breaking the table or flooding it: escaped, and cut to maxNoteLen
// bytes.
func oneLine(s string) string {
	if len(s) > maxNoteLen {
		cut := maxNoteLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return printable(s[:cut]) + fmt.Sprintf("... (%d bytes more)", len(s)-cut)
	}
	return printable(s)
}

// printable escapes what a terminal would act on: control characters
// (newlines and escape sequences included) and invalid UTF-8, as Go
// quotes them. Scan ids, file names and command lines come from other
// users and must not reach the terminal of whoever runs status raw.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// completeScanArgs completes options, and scan ids once SOURCE is typed
// (run and status take SOURCE SCAN).
func completeScanArgs(c *cli.Context) {
	if n := len(os.Args); n >= 2 && strings.HasPrefix(os.Args[n-2], "-") {
		cli.DefaultCompleteWithFlags(c.Command)(c)
		return
	}
	if c.NArg() < 1 || (c.Command.Name == "run" && c.NArg() != 1) {
		return
	}
	entries, err := os.ReadDir(c.Args().First())
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && lockmgr.ValidateScanID(e.Name()) == nil {
			fmt.Fprintln(c.App.Writer, e.Name())
		}
	}
}

// addMountHolders replaces each running mount of source (in /proc/locks
// one flock holder: its daemon) by the programs behind it, from the
// mount's .locks/status.json. A mount that does not answer within two
// seconds is noted and left as it is.
func addMountHolders(errw io.Writer, source string, list []scanstatus.Scan) {
	mounts, _ := scanstatus.FindMounts(source)
	for _, mnt := range mounts {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		doc, err := scanstatus.ReadMount(ctx, mnt)
		cancel()
		if err != nil {
			fmt.Fprintf(errw, "scanlockfs: note: cannot read the status of the mount %s: %v\n", mnt, err)
			continue
		}
		for i := range list {
			for _, ms := range doc.Scans {
				if ms.ScanID == list[i].ScanID {
					mergeMount(&list[i], &ms, doc.PID)
				}
			}
		}
	}
}

// mergeMount puts the programs of a mount (its view ms of scan st) in
// place of its daemon (pid daemon). Entries WhereSource of the mount are
// processes on SOURCE that the mount found in /proc/locks, as status did:
// they are listed already.
func mergeMount(st, ms *scanstatus.Scan, daemon int) {
	st.Holders = slices.DeleteFunc(st.Holders, func(h scanstatus.Holder) bool { return h.PID == daemon })
	st.Waiters = slices.DeleteFunc(st.Waiters, func(w scanstatus.Waiter) bool { return w.PID == daemon })
	for _, h := range ms.Holders {
		if h.Where != scanstatus.WhereSource {
			st.Holders = append(st.Holders, h)
		}
	}
	for _, w := range ms.Waiters {
		if w.Where != scanstatus.WhereSource {
			st.Waiters = append(st.Waiters, w)
		}
	}
}
