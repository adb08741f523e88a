package lockmgr

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
func (m *Manager) PurgeStale(dryRun bool) ([]string, error) {
	if m.cfg.readOnly && !dryRun {
		return nil, fmt.Errorf("%w: cannot purge stale lock files", ErrReadOnly)
	}
	entries, err := os.ReadDir(m.lockDir)
	if err != nil {
		return nil, fmt.Errorf("%w: listing %s: %v", ErrLockFile, m.lockDir, err)
	}
	// Scans this manager is using are not stale, even if nobody holds them
	// at this instant. (Idle ones are: their descriptor holds no lock, and
	// the next acquisition notices that the file is gone.)
	m.mu.Lock()
	inUse := make(map[string]bool, len(m.scans))
	for id, s := range m.scans {
		if s.refs > 0 {
			inUse[id] = true
		}
	}
	m.mu.Unlock()

	var removed []string
	var errs []error
	remove := func(p string) {
		if dryRun {
			if fileExists(p) { // an .info is optional: list only what is there
				removed = append(removed, p)
			}
			return
		}
		if err := os.Remove(p); err == nil {
			removed = append(removed, p)
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	lockIDs := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if id, ok := strings.CutSuffix(name, ".lock"); ok && ValidateScanID(id) == nil {
			lockIDs[id] = true
			if inUse[id] {
				continue
			}
			p := filepath.Join(m.lockDir, name)
			if e.IsDir() {
				errs = append(errs, m.lockFileError(p, unix.EISDIR))
				continue
			}
			// Read-only and not through symlinks: flock needs no write
			// access, and lock files of other users may not grant it.
			fl := flock.New(p, flock.SetFlag(os.O_RDONLY|unix.O_NOFOLLOW))
			ok, err := fl.TryLock()
			if err != nil || !ok {
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, m.lockFileError(p, err))
				}
				continue // held by somebody: not stale
			}
			if same, _ := flockNames(fl, p); same {
				remove(m.infoPath(id))
				// Nobody holds the lock, so no writer waits for it.
				if g := m.gatePath(id); fileExists(g) {
					remove(g)
				}
				remove(p)
			}
			_ = fl.Unlock()
		}
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(m.lockDir, name)
		if rest, ok := strings.CutPrefix(name, ".info-tmp-"); ok {
			// .info-tmp-PID-SEQ: a crash between write and rename.
			pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
			if err == nil && pid != m.pid && !processAlive(pid) {
				remove(p)
			}
			continue
		}
		if id, ok := strings.CutSuffix(name, ".info"); ok && ValidateScanID(id) == nil && !lockIDs[id] && !inUse[id] {
			// An .info without a lock file: stale if its writer is dead.
			inf, err := readInfoFile(p)
			if err != nil || inf == nil || (inf.PID != m.pid && !processAlive(inf.PID)) {
				remove(p)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// flockNames reports whether path still names the file fl has locked.
func flockNames(fl *flock.Flock, path string) (bool, error) {
	fst, err := fl.Stat()
	if err != nil {
		return false, err
	}
	var pst unix.Stat_t
	if err := unix.Stat(path, &pst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return statID(fst) == fileID{dev: pst.Dev, ino: pst.Ino}, nil
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// processAlive reports whether pid names a live process.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
