package lockmgr

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Polling bounds for cross-process waits. flock(2) has no queue and a
// blocking flock cannot be cancelled, so waiters poll with LOCK_NB; the
// cap keeps the hand-over from another process under a millisecond.
const (
	backoffMin = 20 * time.Microsecond
	backoffMax = 500 * time.Microsecond
)

// testHookOpened, when set by a test, runs after the lock file was opened
// and before it is locked: the window in which another process may unlink
// or replace it.
var testHookOpened func(path string)

// flockBackend is the default backend: plantdb's lock files, locked
// with flock(2) (see the package documentation for the protocol). It
// owns everything on disk that a hold involves: the lock file's
// descriptor and its identity check, the writer gate, the wait for a
// releasing plantdb process, the .info file (info.go) and the cache of
// idle lock files, evicted least recently used first.
type flockBackend struct {
	dir      *lockDir // shared with the Manager
	lockDir  string
	cfg      config
	log      logrus.FieldLogger
	pid      int
	hostname string
	stats    *counters
	lost     lostFunc
	closed   atomic.Bool
	closeCh  chan struct{}

	infoSweep infoSweeper

	started   time.Time
	foreignAt atomic.Int64 // when foreign use of any scan was last seen (UnixNano; see foreign.go)

	mu         sync.Mutex // guards files, idle, raceLogged, and every lockFile's users and idle links
	files      map[string]*lockFile
	idle       idleList        // lock files nobody uses, still open
	maxIdle    int             // how many of them stay open
	raceLogged map[string]bool // scans whose plantdb race was logged (foreign.go)

	names nameWatch // the lock directory's watch for lost names (nameguard.go)
}

var _ backend = (*flockBackend)(nil)

func newFlockBackend(dir *lockDir, lockDirPath string, cfg config, log logrus.FieldLogger, pid int, host string, stats *counters, lost lostFunc) *flockBackend {
	return &flockBackend{dir: dir, lockDir: lockDirPath, cfg: cfg, log: log, pid: pid, hostname: host,
		stats: stats, lost: lost, closeCh: make(chan struct{}), files: make(map[string]*lockFile),
		started: time.Now(), raceLogged: make(map[string]bool), maxIdle: maxIdleFiles()}
}

// maxIdleFiles is how many lock files of idle scans stay open:
// maxIdleScans, but at most a quarter of the descriptors the process may
// open (a FUSE daemon needs its descriptors for the files it serves).
func maxIdleFiles() int {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil || rl.Cur >= 4*maxIdleScans {
		return maxIdleScans
	}
	return max(int(rl.Cur/4), 16)
}

// lockFile is the flock backend's state of one scan: its lock file, kept
// open from first use until it is evicted from the idle cache, its gate
// and its .info file.
type lockFile struct {
	b                            *flockBackend
	id                           string
	lockPath, infoPath, gatePath string
	lockRel                      string // the lock file's name for lockDir.nameStat
	gateName                     string

	users int // scheduler handles; guarded by b.mu
	// In b.idle while users is 0 and fd is open; guarded by b.mu.
	inIdle             bool
	idlePrev, idleNext *lockFile

	// fd and fid are only touched by the goroutine in lock or unlock (the
	// scheduler lets one at a time in), or by b.mu holders while users is 0.
	fd       int    // the lock file, or -1
	fid      fileID // identity of fd's file
	kernelEx bool   // our flock on fd is LOCK_EX (also for a shared hold in foreign mode)

	fs    foreignState // foreign use of the scan (foreign.go)
	fence fenceState   // orphaned lock files others have open (fence.go)
	guard guardState   // new lock files taken when ours lost its name (nameguard.go)

	gateMu sync.Mutex // guards gateFD; a leaf: nothing is locked while it is held
	gateFD int        // S.gate, read-only, once seen while in use; -1 if not

	mu       sync.Mutex // guards the hold and the info state below
	infoDone sync.Cond  // signalled (on mu) when an .info write ends
	held     Mode       // what this process holds with flock(2) right now
	since    time.Time
	epoch    uint64 // incremented whenever held becomes non-zero or stronger
	owner    Owner  // the owner whose request took the flock, for .info
	info     infoState

	wrec waitRecord // this process's waiting record (waitrec.go)
}

var _ backendScan = (*lockFile)(nil)

// open implements backend: the scan's lock file, from the idle cache if
// it is there.
func (b *flockBackend) open(id string) backendScan {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.files[id]
	if f == nil {
		f = &lockFile{b: b, id: id, lockPath: b.lockDir + "/" + id + ".lock", lockRel: b.dir.relName(id + ".lock"),
			infoPath: b.lockDir + "/" + id + ".info", gatePath: b.lockDir + "/" + id + ".gate", gateName: id + ".gate",
			fd: -1, gateFD: -1}
		f.infoDone.L = &f.mu
		b.files[id] = f
	}
	b.idle.remove(f)
	f.users++
	return f
}

// done implements backendScan. A scan nobody uses keeps its lock file
// open (a later acquisition then skips open(2)), up to maxIdleScans of
// them: the least recently used one is closed first.
func (f *lockFile) done() {
	b := f.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if f.users--; f.users > 0 {
		return
	}
	if f.fd < 0 || b.closed.Load() {
		b.forgetIdle(f)
		return
	}
	f.closeGate()
	b.idle.pushFront(f)
	for b.idle.n > b.maxIdle {
		b.forgetIdle(b.idle.back())
	}
}

// forgetIdle closes an unused lock file and forgets it. Nobody else can
// reach f: its users are 0 and b.mu is held.
func (b *flockBackend) forgetIdle(f *lockFile) {
	b.idle.remove(f)
	delete(b.files, f.id)
	f.closeFile()
	f.closeFences()
}

// shutdown implements backend.
func (b *flockBackend) shutdown() {
	if b.closed.CompareAndSwap(false, true) {
		close(b.closeCh)
		b.infoSweep.stop()
		b.stopWatch()
	}
}

// close implements backend: it closes the idle lock files.
func (b *flockBackend) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.idle.n > 0 {
		b.forgetIdle(b.idle.back())
	}
}

// lock implements backendScan: it takes the flock and records the hold
// for the .info file, which it writes at once (WithInfoDelay(0)) or
// schedules.
func (f *lockFile) lock(ctx context.Context, req holdRequest) (Mode, error) {
	b := f.b
	got, err := f.flock(ctx, req)
	var infoID fileID
	if err == nil && b.cfg.infoFiles && b.cfg.infoDelay <= 0 {
		// Synchronous .info: written before the grant, while the
		// scheduler keeps every release away.
		infoID = b.writeInfo(f.id, req.to, req.owner, time.Now())
	}
	f.mu.Lock()
	if got > f.held {
		f.epoch++
		f.owner = req.owner
	}
	f.setHeld(got)
	if !infoID.zero() {
		f.info.id, f.info.epoch = infoID, f.epoch
	}
	if err == nil && b.cfg.infoFiles && b.cfg.infoDelay > 0 {
		b.scheduleInfo(f)
	}
	f.mu.Unlock()
	return got, err
}

func (f *lockFile) setHeld(m Mode) {
	if m != f.held {
		f.held = m
		f.since = time.Now()
	}
}

// unlock implements backendScan: it removes the .info file if it is
// still ours (after a write in flight has ended, so that no .info of
// ours outlives our flock), checks that the lock file still has its name
// and drops the flock (non-blocking system calls).
func (f *lockFile) unlock() {
	f.mu.Lock()
	for f.info.busy {
		f.infoDone.Wait()
	}
	f.b.cancelInfo(f)
	held := f.held
	f.setHeld(0)
	f.mu.Unlock()
	if f.fd >= 0 {
		f.checkStillNamed(held)
		f.kernelEx = false
		if err := unix.Flock(f.fd, unix.LOCK_UN); err != nil {
			f.b.log.WithError(err).WithField("scan", f.id).Warn("unlocking scan lock file failed; closing it")
			f.closeFile()
		}
	}
	f.guardOff()
	f.unlockFences()
}

// flock takes the flock of the scan in req.to, starting from req.from (0
// or Shared, the latter being an upgrade). It returns the mode this
// process holds afterwards, also on failure: a failed upgrade may have
// lost the shared lock, because flock(2) drops the old lock before it
// tries the new one.
func (f *lockFile) flock(ctx context.Context, req holdRequest) (Mode, error) {
	b, path, to := f.b, f.lockPath, req.to
	cur := req.from
	gate := -1 // S.gate, with our OFD lock on it while a writer of ours waits
	defer func() {
		if gate >= 0 {
			unix.Close(gate) // which drops its lock
		}
	}()
	if cur == 0 && !req.try {
		f.linger(ctx)
	}
	delay := backoffMin
	var timer *time.Timer
	recorded := false // a waiting record is set for this request
	for {
		if f.fd < 0 {
			if err := f.openLockFile(); err != nil {
				return 0, err
			}
			if testHookOpened != nil {
				testHookOpened(path)
			}
		}
		if cur == Shared && req.orphaned != nil && req.orphaned() {
			// Kept, that orphan flock would make two processes upgrading
			// at once wait for each other until both time out.
			f.unlock()
			cur = 0
		}
		ok, got, err := f.try(cur, to, req.loan)
		cur = got
		if !ok && cur == 0 {
			// An upgrade that lost its flock: no fence of ours may make
			// the holder wait for us meanwhile.
			f.unlockFences()
		}
		if to == Exclusive && !ok && err == nil && gate < 0 && !req.try {
			gate = f.takeGate()
		}
		if !ok && err == nil && !recorded && !req.try {
			recorded = true
			f.waiting(to, 1)
			defer f.waiting(to, -1)
		}
		if err != nil {
			f.closeFile()
			return 0, lockFileError(path, err)
		}
		if ok {
			granted, err := f.confirm(ctx, req)
			if err != nil {
				return 0, err
			}
			if granted {
				return to, nil
			}
			cur = 0 // given back: start over
			continue
		}
		if req.try {
			return cur, fmt.Errorf("%w: scan %s is locked by another process", ErrWouldBlock, f.id)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return cur, ctx.Err()
		case <-b.closeCh:
			return cur, ErrClosed
		case <-timer.C:
		}
		delay = min(delay*2, backoffMax)
	}
}

// confirm runs after a flock was taken for req: it reports whether the
// grant stands, or whether the flock was given back or lost (the caller
// starts over), or fails (no flock kept; the error says why).
func (f *lockFile) confirm(ctx context.Context, req holdRequest) (bool, error) {
	granted, err := f.checkGrant(ctx, req)
	if err != nil || !granted {
		f.guardOff()
	}
	return granted, err
}

// checkGrant is confirm without the end of the name guard on failure.
func (f *lockFile) checkGrant(ctx context.Context, req holdRequest) (bool, error) {
	b, path := f.b, f.lockPath
	if b.awaitPlantdbRelease(ctx, f, f.kernelMode()) {
		// A plantdb reader shares our flock: its release would unlink the
		// file under us. Give it back and wait (in LOCK_EX now: foreign
		// use is known).
		f.dropFlock()
		return false, nil
	}
	var st unix.Stat_t
	f.guardOn() // before the check: a name lost after it is guarded
	same, err := f.stillNamedStat(&st)
	if err != nil {
		f.closeFile()
		return false, lockFileError(path, err)
	}
	if !same {
		// Somebody unlinked or replaced the lock file between our open
		// and our flock (or just after, see awaitPlantdbRelease): the lock
		// we got protects nothing. Start over on whatever the path names
		// now.
		f.closeFile()
		b.stats.replaced.Add(1)
		b.log.WithField("path", path).Debug("lock file replaced while locking; retrying")
		return false, nil
	}
	f.noteGrant(&st)
	if !f.kernelEx && f.foreignKnown() {
		// Foreign use just became known: our shared flock could be shared
		// with a plantdb reader. Take it again with LOCK_EX.
		f.dropFlock()
		return false, nil
	}
	if f.needOrphanCheck() {
		return f.guardOrphans(ctx, req.to, req.try)
	}
	return true, nil
}

// try makes one non-blocking attempt to go from cur to to. It returns
// the mode held afterwards (cur unless an upgrade lost it). A loan's
// shared hold does not hold back for a waiting writer (see holdRequest).
func (f *lockFile) try(cur, to Mode, loan bool) (ok bool, held Mode, err error) {
	switch {
	case to == Shared && loan:
		ok, err = flockNB(f.fd, unix.LOCK_SH)
		return ok, cur, err
	case to == Shared:
		ok, err = f.tryShared()
		return ok, cur, err
	case cur == Shared && f.kernelEx:
		return true, cur, nil // a shared hold taken with LOCK_EX (foreign mode)
	case cur == Shared:
		return f.tryUpgrade()
	}
	ok, err = flockNB(f.fd, unix.LOCK_EX)
	if ok {
		f.kernelEx = true
	}
	return ok, cur, err
}

// kernelMode is the mode of our flock on the lock file.
func (f *lockFile) kernelMode() Mode {
	if f.kernelEx {
		return Exclusive
	}
	return Shared
}

// dropFlock gives back a flock just taken; closing the file instead is
// the fallback.
func (f *lockFile) dropFlock() {
	f.unlockFences()
	f.kernelEx = false
	if err := unix.Flock(f.fd, unix.LOCK_UN); err != nil {
		f.closeFile()
	}
}

// openLockFile opens (creating it if needed) the lock file of s: only a
// regular file with one link, opened without following a symbolic link
// and checked before it is opened for real (see lockdir.go), so that a
// FIFO, a device or a hard link planted in the shared lock directory is
// refused, naming it, instead of blocking, acting or merging two scans.
// It is read-only when we may not write it (a file created by another
// user with a narrower mode): on local file systems flock(2) works on
// any descriptor, but where it is emulated with fcntl locks (NFS) an
// exclusive lock needs write access.
func (f *lockFile) openLockFile() error {
	b := f.b
	if err := b.dir.refresh(); err != nil {
		return err
	}
	before := time.Now()
	fd, st, err := b.dir.openFile(f.id+".lock", unix.O_RDWR, true, uint32(b.cfg.fileMode), true)
	if err != nil {
		return lockFileError(f.lockPath, err)
	}
	b.fixMode(fd, &st)
	f.fd, f.fid = fd, fileID{dev: st.Dev, ino: st.Ino}
	f.noteOpened(f.fid, &st, before)
	return nil
}

// fixModeFD gives a file we created the configured mode, which the umask
// may have narrowed: other users of the scan tree must be able to open it
// for writing.
func (b *flockBackend) fixModeFD(fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		b.fixMode(fd, &st)
	}
}

// fixMode is fixModeFD with the file's status already at hand. It
// reports whether it changed the mode.
func (b *flockBackend) fixMode(fd int, st *unix.Stat_t) {
	if st.Uid == uint32(os.Geteuid()) && os.FileMode(st.Mode&0o7777) != b.cfg.fileMode {
		_ = unix.Fchmod(fd, uint32(b.cfg.fileMode))
	}
}

// closeFile closes the lock file, which drops any flock on it,
// and the gate with it (the lock file is closed when it was replaced, and
// PurgeStale unlinks a gate only with its lock file).
func (f *lockFile) closeFile() {
	f.unlockFences()
	if f.fd >= 0 {
		unix.Close(f.fd)
		f.fd, f.fid, f.kernelEx = -1, fileID{}, false
	}
	f.closeGate()
}

// closeGate closes the gate if it is open. An idle scan keeps its
// lock file open but not its gate: only in-use scans need the fast test.
func (f *lockFile) closeGate() {
	f.gateMu.Lock()
	if f.gateFD >= 0 {
		unix.Close(f.gateFD)
		f.gateFD = -1
	}
	f.gateMu.Unlock()
}

// flockNB tries flock(fd, how|LOCK_NB): false without error when the lock
// is held elsewhere.
func flockNB(fd, how int) (bool, error) {
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		}
		return false, err
	}
}

// stillNamed reports whether the lock file's name names the file f.fd
// has open, looked up through the lock directory's entry in its parent
// (lockDir.nameStat): a lock directory replaced meanwhile (removed and
// created again, or renamed and another put in its place) is then
// noticed, and the file opened anew in the new one. A symbolic link is
// never the same file.
func (f *lockFile) stillNamed() (bool, error) {
	var st unix.Stat_t
	return f.stillNamedStat(&st)
}

// stillNamedStat is stillNamed, leaving the path's status in st.
func (f *lockFile) stillNamedStat(st *unix.Stat_t) (bool, error) {
	if err := f.b.dir.nameStat(f.lockRel, f.lockPath, st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return (fileID{dev: st.Dev, ino: st.Ino}) == f.fid, nil
}

// checkStillNamed runs before a release: if the lock file lost its name
// while we held it, another process may have locked a new file under that
// name meanwhile, and exclusion was not guaranteed. Only a process outside
// this protocol (plantdb's release, plantdb's stale clean-up) does that.
func (f *lockFile) checkStillNamed(held Mode) {
	var st unix.Stat_t
	same, err := f.stillNamedStat(&st)
	if err == nil && same {
		f.noteForeignAttempt(&st)
	}
	if err == nil && !same && f.guarded() {
		f.b.log.WithField("scan", f.id).Debug("the lock file lost its name during our hold; the new one was held in time")
		return
	}
	if err == nil && !same {
		f.b.lost(f.id, held, "the lock file was removed or replaced while this process held it (a plantdb process unlinks it when it releases); "+
			"another process may have locked the scan at the same time")
	}
}

// tryShared takes the flock shared unless a writer of another process of
// ours waits for it (it holds the gate): then readers hold back so that
// writers are not starved.
func (f *lockFile) tryShared() (bool, error) {
	if f.gateSet() {
		return false, nil
	}
	if f.foreignKnown() {
		// See foreign.go: no plantdb reader may share our flock.
		ok, err := flockNB(f.fd, unix.LOCK_EX)
		f.kernelEx = ok
		return ok, err
	}
	f.kernelEx = false
	return flockNB(f.fd, unix.LOCK_SH)
}

// The gate is S.gate, a file of its own, on which a waiting writer holds
// an OFD read lock (fcntl F_OFD_SETLK) on the first byte, and which
// readers test with F_OFD_GETLK. A test takes no lock, so readers never
// get in the way of a writer setting the gate (as they did when it was a
// flock that readers took shared to probe it), and several writers can
// hold it at once. It is a separate file because where flock is emulated
// with fcntl locks (NFS), an fcntl lock on S.lock would conflict with the
// writers' own flock.

// writerWaiting implements backendScan: a writer of another process of
// ours waits (the gate), or a new reader must not join this process's
// hold because of a foreign process (see joinable in foreign.go).
func (f *lockFile) writerWaiting() bool {
	return f.gateSet() || !f.joinable()
}

// gateSet reports whether a writer of another process of ours (or
// of this one) holds the gate of the scan. Errors only cost fairness,
// never correctness. It is on the path of every shared acquisition: the
// gate is looked for with a stat (a failed open costs more), and once it
// exists it stays open while the scan is in use, so that the test is one
// fcntl.
func (f *lockFile) gateSet() bool {
	f.gateMu.Lock()
	defer f.gateMu.Unlock()
	if f.gateFD < 0 {
		var st unix.Stat_t
		if f.b.dir.lstat(f.gateName, &st) != nil {
			return false // no writer has ever waited here
		}
		g, _, err := f.b.dir.openFile(f.gateName, unix.O_RDONLY, false, 0, false)
		if err != nil {
			return false
		}
		f.gateFD = g
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 1}
	if unix.FcntlFlock(uintptr(f.gateFD), unix.F_OFD_GETLK, &lk) != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// takeGate marks a writer of this process as waiting, so that new readers
// of our other processes hold back. It returns the gate's descriptor,
// whose closing removes the mark, or -1: failure only costs fairness.
func (f *lockFile) takeGate() int {
	g, _, err := f.b.dir.openFile(f.id+".gate", unix.O_RDWR, true, uint32(f.b.cfg.fileMode), true)
	if err != nil {
		return -1
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Start: 0, Len: 1}
	if unix.FcntlFlock(uintptr(g), unix.F_OFD_SETLK, &lk) != nil {
		unix.Close(g)
		return -1
	}
	f.b.fixModeFD(g)
	return g
}

// tryUpgrade converts this process's shared flock to exclusive. flock(2)
// removes the shared lock before it tries the exclusive one, even with
// LOCK_NB, so a failed attempt leaves us without any lock. To keep that
// window rare, the conversion is only tried when /proc/locks shows no
// other holder; if it still fails, the shared lock is taken again at once.
// The returned mode is what we hold afterwards.
func (f *lockFile) tryUpgrade() (bool, Mode, error) {
	if others, err := f.b.othersHold(f.fid); err == nil && others {
		return false, Shared, nil
	}
	ok, err := flockNB(f.fd, unix.LOCK_EX)
	if ok || err != nil {
		f.kernelEx = ok
		return ok, Shared, err
	}
	// The shared lock is gone: take it again.
	ok, err = flockNB(f.fd, unix.LOCK_SH)
	if err != nil {
		return false, 0, err
	}
	if ok {
		if same, _ := f.stillNamed(); same {
			return false, Shared, nil
		}
		_ = unix.Flock(f.fd, unix.LOCK_UN)
	}
	f.b.log.WithFields(logrus.Fields{"scan": f.id}).Warn(
		"shared lock lost while upgrading: another process took the scan exclusively; data read before the upgrade may be stale")
	return false, 0, nil
}

// othersHold reports whether a process other than this one holds a flock
// on file id.
func (b *flockBackend) othersHold(id fileID) (bool, error) {
	locks, err := readProcLocks()
	if err != nil {
		return false, err
	}
	for _, pl := range locks {
		if pl.file == id && pl.kind == "FLOCK" && pl.pid != b.pid {
			return true, nil
		}
	}
	return false, nil
}

// lockFileError explains an unusable lock file, naming it and saying
// what to do. It wraps both ErrLockFile and the cause.
func lockFileError(path string, err error) error {
	if errors.Is(err, ErrLockFile) {
		return err
	}
	var bad *badFileError
	if errors.As(err, &bad) {
		fix := "remove it (once you have checked it holds nothing of value) so that a lock file can be created"
		if bad.errno == unix.EMLINK {
			fix = "another name in or outside the lock directory is the same file; remove this name (rm " + path +
				") while nobody holds the scan, and a lock file of its own is created"
		}
		return fmt.Errorf("%w %s: %w (%s)", ErrLockFile, path, err, fix)
	}
	var hint string
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		hint = "too many open files: raise LimitNOFILE / ulimit -n"
	case errors.Is(err, syscall.ELOOP):
		hint = "remove the symbolic link so a lock file can be created"
	case errors.Is(err, fs.ErrPermission):
		hint = "no permission to create or open it; make the lock directory group-writable for the users of the scan tree"
	case errors.Is(err, fs.ErrNotExist):
		hint = "the lock directory is gone; recreate it or restart"
	case errors.Is(err, syscall.ENOSPC):
		hint = "the file system is full"
	default:
		hint = "check the lock directory"
	}
	return fmt.Errorf("%w %s: %w (%s)", ErrLockFile, path, err, hint)
}

// fileID is a file's identity: device and inode.
type fileID struct {
	dev uint64
	ino uint64
}

func (f fileID) zero() bool { return f == fileID{} }

func statID(st os.FileInfo) fileID {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return fileID{dev: uint64(sys.Dev), ino: sys.Ino}
	}
	return fileID{}
}

// idleList is the flock backend's lock files of idle scans, most recently
// used first, linked through the files themselves (no allocation per
// release).
type idleList struct {
	front, last *lockFile
	n           int
}

func (l *idleList) pushFront(f *lockFile) {
	f.inIdle, f.idlePrev, f.idleNext = true, nil, l.front
	if l.front != nil {
		l.front.idlePrev = f
	} else {
		l.last = f
	}
	l.front = f
	l.n++
}

// remove takes f out of the list if it is in it.
func (l *idleList) remove(f *lockFile) {
	if !f.inIdle {
		return
	}
	if f.idlePrev != nil {
		f.idlePrev.idleNext = f.idleNext
	} else {
		l.front = f.idleNext
	}
	if f.idleNext != nil {
		f.idleNext.idlePrev = f.idlePrev
	} else {
		l.last = f.idlePrev
	}
	f.inIdle, f.idlePrev, f.idleNext = false, nil, nil
	l.n--
}

// back is the least recently used lock file.
func (l *idleList) back() *lockFile { return l.last }
