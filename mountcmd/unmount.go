package mountcmd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"scanlockfs/internal/procfs"
	"scanlockfs/lockmgr"
)

// Unmount retries: closing a file returns before the kernel lets go of
// the mount (FUSE RELEASE is asynchronous), so EBUSY right after a
// program exits is normal and passes within moments.
const (
	unmountAttempts = 10
	unmountPause    = 100 * time.Millisecond
)

// unmountCommand is `scanlockfs unmount`.
func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount a scanlockfs (or any FUSE) mount",
		ArgsUsage: "MOUNTPOINT",
		UsageText: "scanlockfs unmount [--lazy] MOUNTPOINT",
		Description: "Unmounts MOUNTPOINT: with umount2(2) as root, with 'fusermount3 -u' otherwise (the user\n" +
			"who mounted it). Also clears a dead mount whose server crashed ('transport endpoint is not\n" +
			"connected'). If programs still use the mount, it stays mounted and they are listed\n" +
			"(pid, command, user and what they use); --lazy detaches it at once instead, and the\n" +
			"kernel finishes the unmount when the last of them is done.\n\n" +
			"Exit codes: 0 unmounted; 4 busy (the programs are listed); 6 MOUNTPOINT missing or\n" +
			"nothing mounted there; 2 bad arguments or not a FUSE mount; 5 the unmount failed.\n\n" +
			"Examples:\n" +
			"  scanlockfs unmount /mnt/db\n" +
			"  scanlockfs unmount --lazy /mnt/db     # busy, but must go now\n" +
			"  scanlockfs unmount /mnt/db || [ $? -eq 6 ]   # in stop scripts: not mounted is fine",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"z"}, Usage: "detach now even if busy (MNT_DETACH, fusermount3 -z)"},
		},
		Action: unmountAction,
	}
}

func unmountAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErrorf("unmount: want exactly one MOUNTPOINT, got %d arguments: scanlockfs unmount [--lazy] MOUNTPOINT", c.NArg())
	}
	mp, err := resolveMountpoint(c.Args().First())
	if err != nil {
		return err
	}
	mounts, err := readMountinfo()
	if err != nil {
		return exitf(ExitInternal, "unmount: %w", err)
	}
	mi := findMount(mounts, mp)
	if mi == nil {
		return exitf(ExitNotFound, "unmount: nothing is mounted on %s: nothing to do", mp)
	}
	if !isFUSE(mi.fstype) {
		return usageErrorf("unmount: %s is a %s mount, not a FUSE mount: use umount(8) for it", mp, mi.fstype)
	}
	lazy := c.Bool("lazy")
	if os.Geteuid() == 0 {
		err = unmountSyscall(mp, lazy)
	} else {
		err = unmountFusermount(mp, lazy)
	}
	if err == nil {
		if lazy {
			fmt.Fprintf(c.App.ErrWriter, "detached %s; the kernel finishes the unmount when no program uses it any more\n", mp)
		}
		return nil
	}
	if errors.Is(err, unix.EBUSY) {
		return exitf(ExitBusy, "unmount: %s is busy: %s\nstop these programs or make them leave %s, then try again; or detach it now with 'scanlockfs unmount --lazy %s'",
			mp, describeUsers(mp, mounts), mp, mp)
	}
	if errors.Is(err, unix.EINVAL) {
		return exitf(ExitNotFound, "unmount: %s is not a mount point (any more): nothing to do", mp)
	}
	return exitf(ExitMount, "unmount: %s: %w", mp, err)
}

// resolveMountpoint makes arg absolute without following the last
// component into a dead FUSE mount, where every stat fails with ENOTCONN.
func resolveMountpoint(arg string) (string, error) {
	if arg == "" {
		return "", usageErrorf("unmount: MOUNTPOINT is empty")
	}
	abs, err := filepath.Abs(arg)
	if err != nil {
		return "", exitf(ExitInternal, "unmount: %s: %w", arg, err)
	}
	var st unix.Stat_t
	err = unix.Lstat(abs, &st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", exitf(ExitNotFound, "unmount: MOUNTPOINT %s does not exist", abs)
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		if r, err := filepath.EvalSymlinks(abs); err == nil {
			return r, nil
		}
	}
	// ENOTCONN and friends: resolve the parent only.
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", exitf(ExitNotFound, "unmount: MOUNTPOINT %s: %w", abs, err)
	}
	return filepath.Join(dir, filepath.Base(abs)), nil
}

type mountEntry struct {
	point  string
	fstype string
	source string // the mount source field (for scanlockfs: the absolute SOURCE)
}

// readMountinfo lists this namespace's mounts, in mount order.
func readMountinfo() ([]mountEntry, error) {
	ms, err := procfs.ReadMountinfo()
	if err != nil {
		return nil, err
	}
	out := make([]mountEntry, len(ms))
	for i, m := range ms {
		out[i] = mountEntry{point: m.MountPoint, fstype: m.FSType, source: m.Source}
	}
	return out, nil
}

// findMount returns the topmost mount on mp, or nil.
func findMount(mounts []mountEntry, mp string) *mountEntry {
	var found *mountEntry
	for i := range mounts {
		if mounts[i].point == mp {
			found = &mounts[i]
		}
	}
	return found
}

func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.")
}

func unmountSyscall(mp string, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	for attempt := 1; ; attempt++ {
		err := unix.Unmount(mp, flags)
		if err == nil || !errors.Is(err, unix.EBUSY) || attempt == unmountAttempts {
			return err
		}
		time.Sleep(unmountPause)
	}
}

// unmountFusermount runs fusermount3, which is setuid root and lets the
// user who mounted a FUSE file system unmount it.
func unmountFusermount(mp string, lazy bool) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		return errors.New("fusermount3 not found: install the fuse3 package (apt-get install fuse3), or run as root")
	}
	arg := "-u"
	if lazy {
		arg = "-uz"
	}
	for attempt := 1; ; attempt++ {
		out, err := exec.Command(bin, arg, "--", mp).CombinedOutput()
		if err == nil {
			return nil
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "resource busy") {
			if attempt == unmountAttempts {
				return fmt.Errorf("%s: %w", msg, unix.EBUSY)
			}
			time.Sleep(unmountPause)
			continue
		}
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("%s (only the user who mounted it, or root, can unmount it)", msg)
	}
}

// mountUser is a process that keeps a mount busy.
type mountUser struct {
	pid     int
	command string
	user    string
	what    []string
}

// findMountUsers scans /proc for processes whose working directory, root,
// open files or mapped files are under mp. Reading these links never
// enters the FUSE file system, so a hung server cannot hang the scan. It
// also returns the processes that could not be inspected (other users',
// or, even for root, those of another user namespace or kept out by a
// security module).
func findMountUsers(mp string) ([]mountUser, []mountUser) {
	pids, err := procfs.PIDs()
	if err != nil {
		return nil, nil
	}
	self := os.Getpid()
	var users, hidden []mountUser
	for _, pid := range pids {
		if pid == self {
			continue
		}
		what, denied := mountUses(pid, mp)
		if len(what) == 0 {
			if denied {
				hidden = append(hidden, mountUser{pid: pid, command: readComm(pid)})
			}
			continue
		}
		u := mountUser{pid: pid, command: readComm(pid), what: what}
		if uid, err := procfs.OwnerUID(pid); err == nil {
			u.user = lockmgr.UserNameOf(uid)
		}
		users = append(users, u)
	}
	sort.Slice(users, func(i, j int) bool { return users[i].pid < users[j].pid })
	return users, hidden
}

// mountUses lists what of process pid is under mp (its working or root
// directory, open and mapped files), and whether /proc refused to show
// its directories or descriptors.
func mountUses(pid int, mp string) (what []string, denied bool) {
	add := func(label string, fds []procfs.FD, err error) {
		if errors.Is(err, fs.ErrPermission) {
			denied = true
		}
		for _, fd := range fds {
			if fd.Target == mp || strings.HasPrefix(fd.Target, mp+"/") {
				what = append(what, label+" "+fd.Target)
			}
		}
	}
	cwd, err := procfs.ReadCwd(pid)
	add("working directory", []procfs.FD{cwd}, err)
	root, err := procfs.ReadRoot(pid)
	add("root directory", []procfs.FD{root}, err)
	fds, err := procfs.ReadFDs(pid)
	add("open file", fds, err)
	if maps, err := procfs.ReadMappedFiles(pid); err == nil {
		add("mapped file", maps, nil)
	}
	return what, denied
}

// hiddenNote says which processes could not be inspected and why, since
// one of them may be what keeps the mount busy: for root, which are
// rare and surprising, by name; for other users, how many.
func hiddenNote(hidden []mountUser, root bool) string {
	if len(hidden) == 0 {
		return ""
	}
	const maxListed = 5
	names := make([]string, 0, min(len(hidden), maxListed))
	for _, u := range hidden[:min(len(hidden), maxListed)] {
		names = append(names, fmt.Sprintf("pid %d (%s)", u.pid, printable(u.command)))
	}
	list := strings.Join(names, ", ")
	if n := len(hidden) - maxListed; n > 0 {
		list += fmt.Sprintf(" and %d more", n)
	}
	if root {
		return fmt.Sprintf("\n  (not inspected, so not known to be using it: %s: /proc refuses even root their open files, "+
			"as for processes of another user namespace (a container) or protected by a security module)", list)
	}
	// Other users' processes: too many to list, and root can see them.
	return fmt.Sprintf("\n  (%d processes of other users could not be inspected; root can see them)", len(hidden))
}

func readComm(pid int) string {
	c, err := procfs.ReadComm(pid)
	if err != nil {
		return "?"
	}
	return c
}

// describeUsers renders the processes that keep mp busy, and nested
// mounts, for the busy error.
func describeUsers(mp string, mounts []mountEntry) string {
	users, hidden := findMountUsers(mp)
	var b strings.Builder
	if len(users) > 0 {
		b.WriteString("in use by")
	}
	for _, u := range users {
		fmt.Fprintf(&b, "\n  pid %d (%s, user %s): ", u.pid, u.command, dash(u.user))
		const maxWhat = 3
		b.WriteString(strings.Join(u.what[:min(len(u.what), maxWhat)], ", "))
		if n := len(u.what) - maxWhat; n > 0 {
			fmt.Fprintf(&b, " and %d more", n)
		}
	}
	for _, m := range mounts {
		if strings.HasPrefix(m.point, mp+"/") {
			fmt.Fprintf(&b, "\n  another file system is mounted inside it on %s (unmount that first)", m.point)
		}
	}
	b.WriteString(hiddenNote(hidden, os.Geteuid() == 0))
	if b.Len() == 0 {
		return "no process using it was found (one in another mount namespace, such as a container, may hold it)"
	}
	return b.String()
}
