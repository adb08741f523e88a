package lockmgr

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gofrs/flock"
	"golang.org/x/sys/unix"
)

// PurgeStale removes the lock files nobody holds, with their .info and
// .gate files, and temporary or .info files left by dead processes. A
// lock file is only unlinked while this process holds it exclusively
// (and after checking that the path still names the locked file), so a
// held lock is never removed. With dryRun it removes nothing and returns
// what it would remove. It returns the paths removed. A manager opened
// WithReadOnly only does dry runs (ErrReadOnly otherwise).
//
// The lock directory is shared with every user of the scan tree, so only
// files that look like ours or plantdb's are removed, never through a
// symbolic link (see lockdir.go), and what is left alone is logged with
// the reason:
//
//   - S.lock: an empty regular file with one link that nobody holds;
//   - S.info: a regular file with one link, at most 64 KiB, that parses
//     as lock info (or is the beginning of one, as a writer killed in
//     the middle of plantdb's in-place write leaves it), of a scan whose
//     lock file is removed or of a dead writer;
//   - S.gate: an empty regular file with one link on which no writer
//     waits, with its lock file or without one;
//   - S.wait: an empty regular file with one link in which no process
//     records a waiter (waitrec.go);
//   - .info-tmp-PID-SEQ: a regular file with one link of a dead PID.
//
// Anything else of the wrong kind where a lock file should be (a
// directory, FIFO, device, symbolic link or hard link) is reported as an
// ErrLockFile error naming it.
func (m *Manager) PurgeStale(dryRun bool) ([]string, error) {
	if m.cfg.readOnly && !dryRun {
		return nil, fmt.Errorf("%w: cannot purge stale lock files", ErrReadOnly)
	}
	if err := m.dir.refresh(); err != nil {
		return nil, err
	}
	names, err := m.dir.names()
	if err != nil {
		return nil, fmt.Errorf("%w: listing %s: %w", ErrLockFile, m.lockDir, err)
	}
	// Scans this manager is using are not stale, even if nobody holds them
	// at this instant. (Idle ones are: their descriptor holds no lock, and
	// the next acquisition notices that the file is gone.)
	inUse := map[string]bool{}
	for _, s := range m.sched.inUse() {
		inUse[s.id] = true
	}

	var removed []string
	var errs []error
	remove := func(name string) {
		p := m.lockDir + "/" + name
		if dryRun {
			var st unix.Stat_t // an .info is optional: list only what is there
			if m.dir.lstat(name, &st) == nil {
				removed = append(removed, p)
			}
			return
		}
		if err := m.dir.unlink(name); err == nil {
			removed = append(removed, p)
		} else if !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing %s: %w", p, err))
		}
	}
	skip := func(name, why string) {
		m.log.WithField("path", m.lockDir+"/"+name).Warn("stale clean-up leaves it alone: " + why)
	}
	lockIDs := map[string]bool{}
	for _, name := range names {
		id, ok := strings.CutSuffix(name, ".lock")
		if !ok || ValidateScanID(id) != nil {
			continue
		}
		lockIDs[id] = true
		if inUse[id] {
			continue
		}
		if err := m.purgeLock(id, remove, skip); err != nil {
			errs = append(errs, err)
		}
	}
	m.purgeOrphans(names, lockIDs, inUse, remove, skip)
	return removed, errors.Join(errs...)
}

// purgeOrphans removes the temporary files of dead writers, the .info
// files without a lock file whose writer is dead and the gates without a
// lock file that no writer waits on (see PurgeStale).
func (m *Manager) purgeOrphans(names []string, lockIDs, inUse map[string]bool, remove func(name string), skip func(name, why string)) {
	for _, name := range names {
		if rest, ok := strings.CutPrefix(name, ".info-tmp-"); ok {
			// .info-tmp-PID-SEQ: a crash between write and rename.
			pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
			if err != nil || pid == m.pid || processAlive(pid) {
				continue
			}
			var st unix.Stat_t
			if err := m.dir.lstat(name, &st); err == nil {
				if err := checkFile(&st); err != nil {
					skip(name, err.Error())
				} else {
					remove(name)
				}
			}
			continue
		}
		if id, ok := strings.CutSuffix(name, ".gate"); ok && ValidateScanID(id) == nil && !lockIDs[id] && !inUse[id] {
			m.purgeGate(id, remove, skip)
			continue
		}
		if id, ok := strings.CutSuffix(name, ".wait"); ok && ValidateScanID(id) == nil && !inUse[id] {
			m.purgeWait(id, remove, skip)
			continue
		}
		if id, ok := strings.CutSuffix(name, ".info"); ok && ValidateScanID(id) == nil && !lockIDs[id] && !inUse[id] {
			// An .info without a lock file: stale if its writer is dead.
			inf, torn, why := m.infoLooksOurs(name)
			switch {
			case why != "":
				skip(name, why)
			case torn || (inf != nil && inf.PID != m.pid && !processAlive(inf.PID)):
				remove(name)
			}
		}
	}
}

// purgeLock removes the lock file of scan id, with its .info and .gate
// files, if it is ours or plantdb's and nobody holds it.
func (m *Manager) purgeLock(id string, remove func(name string), skip func(name, why string)) error {
	name := id + ".lock"
	p := m.lockDir + "/" + name
	// Read-only: flock needs no write access, and lock files of other
	// users may not grant it.
	fd, st, err := m.dir.openFile(name, unix.O_RDONLY, false, 0, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return lockFileError(p, err)
	}
	defer unix.Close(fd)
	if st.Size != 0 {
		skip(name, "it holds data, so it is no lock file of scanlockfs or plantdb (theirs are empty)")
		return nil
	}
	// Through /proc/self/fd: the very file just checked.
	fl := flock.New("/proc/self/fd/"+strconv.Itoa(fd), flock.SetFlag(os.O_RDONLY))
	defer fl.Close()
	ok, err := fl.TryLock()
	if err != nil || !ok {
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return lockFileError(p, err)
		}
		return nil // held by somebody: not stale
	}
	if same, _ := m.flockNames(fl, name); !same {
		return nil
	}
	info := id + ".info"
	if _, _, why := m.infoLooksOurs(info); why != "" {
		skip(info, why)
	} else if m.dir.lstat(info, &unix.Stat_t{}) == nil {
		remove(info)
	}
	m.purgeGate(id, remove, skip)
	remove(name)
	return nil
}

// purgeGate removes the gate of scan id if it is ours (empty, one link)
// and no writer waits on it (none holds its lock): the gate of a lock
// file being purged, or one left without a lock file (plantdb unlinks
// S.lock when it releases the scan, and scans are locked before they are
// created, or never). A writer that waits keeps it.
func (m *Manager) purgeGate(id string, remove func(name string), skip func(name, why string)) {
	m.purgeUnlocked(id+".gate", "gate", unix.F_OFD_GETLK, 1, remove, skip)
}

// purgeUnlocked removes name, a marker file of ours (what), if it is
// empty, has one link and nobody holds a lock on its first n bytes, as
// fcntl command getlk (F_GETLK or F_OFD_GETLK) tells.
func (m *Manager) purgeUnlocked(name, what string, getlk int, n int64, remove func(name string), skip func(name, why string)) {
	fd, st, err := m.dir.openFile(name, unix.O_RDONLY, false, 0, false)
	if err != nil {
		var bad *badFileError
		if errors.As(err, &bad) {
			skip(name, bad.what)
		}
		return
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: n}
	switch {
	case st.Size != 0:
		skip(name, "it holds data, so it is no "+what+" of scanlockfs (ours are empty)")
	case unix.FcntlFlock(uintptr(fd), getlk, &lk) != nil || lk.Type != unix.F_UNLCK:
		// Somebody holds a lock on it: in use, not stale.
	default:
		remove(name)
	}
}

// infoLooksOurs reads the .info file name and tells whether it is one
// that scanlockfs or plantdb wrote: it parses (inf), or it is torn, the
// beginning of one (a writer killed in the middle of plantdb's in-place
// write, or an empty file). Otherwise why says what it is. A missing file
// gives all zero values.
func (m *Manager) infoLooksOurs(name string) (inf *Info, torn bool, why string) {
	inf, _, err := m.readInfoStat(name)
	if err == nil {
		return inf, false, ""
	}
	var bad *badFileError
	if errors.As(err, &bad) {
		return nil, false, bad.what
	}
	data, _, rerr := m.dir.readFile(name)
	if rerr != nil {
		return nil, false, "it cannot be read: " + rerr.Error()
	}
	const head = `{"scan_id"`
	t := bytes.TrimLeft(data, " \t\r\n")
	if bytes.HasPrefix(t, []byte(head)) || strings.HasPrefix(head, string(t)) {
		return nil, true, ""
	}
	return nil, false, "it is not lock info (JSON starting with " + head + ")"
}

// flockNames reports whether name still names the file fl has locked.
func (m *Manager) flockNames(fl *flock.Flock, name string) (bool, error) {
	fst, err := fl.Stat()
	if err != nil {
		return false, err
	}
	var pst unix.Stat_t
	if err := m.dir.lstat(name, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return statID(fst) == fileID{dev: pst.Dev, ino: pst.Ino}, nil
}

// processAlive reports whether pid names a live process.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
