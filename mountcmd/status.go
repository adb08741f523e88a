package mountcmd

import (
	"context"
	"encoding/json"
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

	"scanlockfs/fusefs"
	"scanlockfs/lockmgr"
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
			"waiters included, with where \"mount\" and their path as note). Without SCAN, lists every scan that is locked or awaited right now; with\n" +
			"SCAN, shows those scans, free or not.\n" +
			"SINCE is known when the holder wrote the scan's .info file (scanlockfs and plantdb do).\n" +
			"USER is the real user of the holding process (from /proc). The user an .info file names is only\n" +
			"a claim (any member of the lock directory's group can write one): it is shown as \"NAME (claimed)\"\n" +
			"where it differs or the process is not visible, and as claimed_user in --json. Notes are cut to\n" +
			"256 bytes in the table.\n" +
			"Waiters show when they block in flock(2) (flock(1), plantdb's blocking mode); programs that\n" +
			"poll for the lock, such as 'scanlockfs run', are not visible while they wait.\n\n" +
			"--json prints one document (all keys always present; unknown times are null):\n" +
			"  {\"source\": DIR, \"lock_dir\": DIR, \"time\": RFC3339,\n" +
			"   \"scans\": [{\"scan_id\": ID, \"state\": \"free\"|\"shared\"|\"exclusive\",\n" +
			"              \"holders\": [ENTRY...], \"waiters\": [ENTRY...]}]}\n" +
			"  ENTRY = {\"mode\": \"shared\"|\"exclusive\", \"pid\": N, \"command\": NAME, \"user\": NAME,\n" +
			"           \"claimed_user\": NAME,\n" +
			"           \"since\": RFC3339|null, \"since_unix\": SECONDS|null, \"for_seconds\": SECONDS|null,\n" +
			"           \"where\": \"process\"|\"local\"|\"mount\", \"note\": TEXT}\n\n" +
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
	list, err := queryStatus(source, lockDir, scans, log, eopts...)
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
	now := time.Now()
	if c.Bool("json") {
		return writeStatusJSON(c.App.Writer, source, lockDir, list, now)
	}
	return writeStatusTable(c.App.Writer, source, list, now)
}

// queryStatus asks lockmgr, without changing anything on disk: a missing
// lock directory means nothing is locked (and is not created), and the
// manager neither purges nor writes .info files.
func queryStatus(source, lockDir string, scans []string, log logrus.FieldLogger, eopts ...lockmgr.Option) ([]*lockmgr.ScanStatus, error) {
	st, err := os.Stat(lockDir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && len(eopts) == 0:
		var list []*lockmgr.ScanStatus
		for _, id := range scans {
			list = append(list, &lockmgr.ScanStatus{ScanID: id, State: "free", Holders: []lockmgr.Holder{}, Waiters: []lockmgr.Waiter{}})
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
		return list, nil
	}
	list := make([]*lockmgr.ScanStatus, 0, len(scans))
	for _, id := range scans {
		s, err := m.Status(id)
		if err != nil {
			return nil, exitf(ExitInternal, "status: scan %s: %w", id, err)
		}
		list = append(list, s)
	}
	return list, nil
}

// statusDoc is the --json document. Its keys are a documented interface
// (see the command's description): add keys, never rename or drop them.
type statusDoc struct {
	Source  string    `json:"source"`
	LockDir string    `json:"lock_dir"`
	Time    string    `json:"time"`
	Scans   []scanDoc `json:"scans"`
}

type scanDoc struct {
	ScanID  string     `json:"scan_id"`
	State   string     `json:"state"`
	Holders []entryDoc `json:"holders"`
	Waiters []entryDoc `json:"waiters"`
}

type entryDoc struct {
	Mode    string `json:"mode"`
	PID     int    `json:"pid"`
	Command string `json:"command"`
	// User is the real user of the process (or of the mount's caller);
	// ClaimedUser what the scan's .info file says, which anybody in the
	// lock directory's group can write.
	User        string   `json:"user"`
	ClaimedUser string   `json:"claimed_user"`
	Since       *string  `json:"since"`
	SinceUnix   *float64 `json:"since_unix"`
	ForSeconds  *float64 `json:"for_seconds"`
	Where       string   `json:"where"`
	Note        string   `json:"note"`
	// Hostname: the host of a holder seen in etcd (where "cluster").
	Hostname string `json:"hostname,omitempty"`
}

func entryDocs(hs []lockmgr.Holder, now time.Time) []entryDoc {
	out := make([]entryDoc, 0, len(hs))
	for _, h := range hs {
		e := entryDoc{Mode: h.Mode.String(), PID: h.PID, Command: h.Command, User: h.User, ClaimedUser: h.ClaimedUser, Where: h.Where, Note: h.Note, Hostname: h.Hostname}
		if !h.Since.IsZero() {
			s := h.Since.Format(time.RFC3339)
			u := float64(h.Since.UnixMilli()) / 1e3
			d := now.Sub(h.Since).Round(time.Millisecond).Seconds()
			e.Since, e.SinceUnix, e.ForSeconds = &s, &u, &d
		}
		out = append(out, e)
	}
	return out
}

func writeStatusJSON(w io.Writer, source, lockDir string, list []*lockmgr.ScanStatus, now time.Time) error {
	doc := statusDoc{Source: source, LockDir: lockDir, Time: now.Format(time.RFC3339), Scans: []scanDoc{}}
	for _, s := range list {
		doc.Scans = append(doc.Scans, scanDoc{ScanID: s.ScanID, State: s.State,
			Holders: entryDocs(s.Holders, now), Waiters: entryDocs(s.Waiters, now)})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(&doc)
}

func writeStatusTable(w io.Writer, source string, list []*lockmgr.ScanStatus, now time.Time) error {
	if len(list) == 0 {
		_, err := fmt.Fprintf(w, "no scan of %s is locked or awaited right now\n", source)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SCAN\tSTATE\tMODE\tPID\tCOMMAND\tUSER\tSINCE\tWHERE\tNOTE")
	row := func(s *lockmgr.ScanStatus, h lockmgr.Holder, waiting bool) {
		mode := h.Mode.String()
		if waiting {
			mode += " (waiting)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", printable(s.ScanID), s.State, mode, h.PID,
			dash(printable(h.Command)), dash(userText(h)), sinceText(h.Since, now), dash(h.Where), dash(oneLine(h.Note)))
	}
	for _, s := range list {
		if !s.Active() {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\n", printable(s.ScanID), s.State)
			continue
		}
		for _, h := range s.Holders {
			row(s, h, false)
		}
		for _, h := range s.Waiters {
			row(s, h, true)
		}
	}
	return tw.Flush()
}

// sinceText is "2025-11-28T09:01:02+01:00 (for 12s)", or "-" if unknown.
func sinceText(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339) + " (for " + shortDuration(now.Sub(t)) + ")"
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
func holderSummary(st *lockmgr.ScanStatus) string {
	if len(st.Holders) == 0 {
		return "no holder is visible now (it was released a moment ago, or is held on another machine)"
	}
	now := time.Now()
	parts := make([]string, 0, len(st.Holders))
	for _, h := range st.Holders {
		var d []string
		if h.Command != "" {
			d = append(d, h.Command)
		}
		if u := userText(h); u != "" {
			d = append(d, "user "+u)
		}
		if !h.Since.IsZero() {
			d = append(d, "for "+shortDuration(now.Sub(h.Since)))
		}
		if h.Note != "" {
			d = append(d, oneLine(h.Note))
		}
		p := "pid " + strconv.Itoa(h.PID)
		if h.Hostname != "" {
			p += " on " + printable(h.Hostname)
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
func userText(h lockmgr.Holder) string {
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
func addMountHolders(errw io.Writer, source string, list []*lockmgr.ScanStatus) {
	mounts, _ := fusefs.FindMounts(source)
	for _, mnt := range mounts {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms, err := fusefs.ReadMountStatus(ctx, mnt)
		cancel()
		if err != nil {
			fmt.Fprintf(errw, "scanlockfs: note: cannot read the status of the mount %s: %v\n", mnt, err)
			continue
		}
		daemon := func(h lockmgr.Holder) bool { return h.PID == ms.PID }
		for _, st := range list {
			for _, si := range ms.Scans {
				if si.ScanID != st.ScanID {
					continue
				}
				st.Holders = slices.DeleteFunc(st.Holders, daemon)
				st.Waiters = slices.DeleteFunc(st.Waiters, daemon)
				// Entries "source" are processes on SOURCE that the mount
				// found in /proc/locks, as this command did: they are
				// already listed, with where "process".
				for _, h := range si.Holders {
					if h.Where != fusefs.WhereSource {
						st.Holders = append(st.Holders, h.Holder())
					}
				}
				for _, w := range si.Waiters {
					if w.Where != fusefs.WhereSource {
						st.Waiters = append(st.Waiters, w.Holder())
					}
				}
			}
		}
	}
}
