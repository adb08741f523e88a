#!/usr/bin/env python3
"""A peer that locks scans the way plantdb's ScanLockManager does.

Tests run it next to Go processes to check that both sides exclude each
other, and the benchmark (workload 7) measures it against Go's lockmgr. It follows plantdb's protocol step by step, standard library only:

  acquire: open ROOT/.locks/SCAN.lock with O_CREAT|O_WRONLY|O_TRUNC,
           flock(LOCK_SH or LOCK_EX | LOCK_NB); on failure close the file,
           sleep 0.1 s and try again until the timeout; then write
           ROOT/.locks/SCAN.info in place (open 'w' + json.dump, not atomic)
           with scan_id, lock_type, user, timestamp, pid, thread_id.
  release: flock(LOCK_UN), close, unlink SCAN.lock, unlink SCAN.info.

With --constructor it also does what plantdb's ScanLockManager constructor
does, in its order: the write probe (ROOT/.write_test.tmp written 'w',
removed), os.makedirs(ROOT/.locks, exist_ok=True), its log file
ROOT/.locks/lock_manager.log opened 'w' (logging.FileHandler's default
here), and the stale clean-up: for each *.lock listed in ROOT/.locks,
open it 'w', flock(LOCK_EX | LOCK_NB), flock(LOCK_UN), close, unlink (a
failure keeps the file). Two constructors run at once race on the probe
(one removes the file the other is about to remove): plantdb then fails
with FileNotFoundError; the peer tolerates that one error, so that tests
starting several peers check the locks, not plantdb's start-up. It then logs to that file as plantdb does: the
clean-up's lines, a warning on a failed attempt, and errors of release.

Commands (every result is one line of space-separated words on stdout;
times are CLOCK_MONOTONIC nanoseconds, comparable with Go's
unix.ClockGettime(unix.CLOCK_MONOTONIC)):

  hold ROOT SCAN       acquire; print "granted T"; wait for a line (or EOF)
                       on stdin; print "released T" (T taken just before
                       the release) and release.
  bench ROOT SCAN      -n uncontended acquire+release cycles; print
                       "ns_per_op X ops N".
  intervals ROOT SCAN  -n cycles of acquire, hold --hold-ms, release, sleep
                       --gap-ms; print "interval MODE BEGIN END" per cycle
                       (BEGIN after the acquisition, END before the
                       release), then "done".
  increment ROOT SCAN  -n exclusive increments of --counter FILE (format
                       "%010d %010d\\n", both numbers equal, each written
                       by its own pwrite so a torn update is visible);
                       print "done N".

  serve ROOT SCAN      print "ready", then answer commands read from stdin,
                       one a line, until "quit" or end of input:
    acquire shared|exclusive TIMEOUT_MS -> "waiting T0", then "ok T0 T1" or
                                           "timeout T0 T1"
    release                             -> "released T0 T1"
    loop shared|exclusive N             -> "loop TOTAL_NS" (N uncontended
                                           acquire+release cycles)
    readers HOLD_US                     -> "reading"; a thread takes the shared
                                           lock, holds it HOLD_US, releases and
                                           takes it again until "stop"
    stop                                -> "intervals T0 T1 T0 T1 ..." (the
                                           reader thread's holds)

A timeout prints "timeout" and exits with status 3 (serve answers
"timeout T0 T1" and goes on).
"""

import argparse
import fcntl
import json
import os
import sys
import threading
import time

EXIT_TIMEOUT = 3


class LockTimeout(Exception):
    pass


class PlantdbLocks:
    """plantdb's acquire/release protocol for one process."""

    def __init__(self, root, retry_sleep=0.1, release_pause=0.0, constructor=False, stall=False):
        self.locks_dir = os.path.join(root, ".locks")
        self.retry_sleep = retry_sleep
        # Extra sleep between close() and unlink() on release: it widens
        # the window in which plantdb unlinks a file another process may
        # have just locked (a descheduled plantdb process does the same).
        self.release_pause = release_pause
        # Stop once between the first open and its flock, as a plantdb
        # process descheduled there does (see --stall-first-open).
        self.stall = stall
        self.log_file = None
        self.warned = {}
        if constructor:
            probe = os.path.join(root, ".write_test.tmp")
            with open(probe, "w") as f:
                f.write("test")
            try:
                os.remove(probe)
            except FileNotFoundError:
                pass  # another constructor's probe removal (see the module doc)
        os.makedirs(self.locks_dir, exist_ok=True)
        if constructor:
            self.log_file = open(os.path.join(self.locks_dir, "lock_manager.log"), "w")
            self.cleanup_stale_locks()

    def log(self, level, msg):
        if self.log_file is not None:
            self.log_file.write("%s - %s\n" % (level, msg))
            self.log_file.flush()

    def cleanup_stale_locks(self):
        self.log("INFO", "Starting cleanup of stale locks...")
        cleaned = 0
        for name in os.listdir(self.locks_dir):
            if not name.endswith(".lock"):
                continue
            path = os.path.join(self.locks_dir, name)
            try:
                with open(path, "w") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                os.unlink(path)
                cleaned += 1
            except OSError:
                self.log("WARNING", "Lock still active: %s" % name)
        self.log("INFO", "Cleaned up %d stale lock files" % cleaned)

    def lock_path(self, scan):
        return os.path.join(self.locks_dir, scan + ".lock")

    def info_path(self, scan):
        return os.path.join(self.locks_dir, scan + ".info")

    def acquire(self, scan, mode, user, timeout):
        how = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
        path = self.lock_path(scan)
        start = time.time()
        while time.time() - start < timeout:
            fd = None
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
                if self.stall:
                    self.stall = False
                    out("opened")
                    sys.stdin.readline()
                fcntl.flock(fd, how | fcntl.LOCK_NB)
            except OSError:
                if fd is not None:
                    os.close(fd)
                # plantdb warns at most every 5 s per scan.
                if time.time() - self.warned.get(scan, 0.0) >= 5.0:
                    self.log("WARNING", "Lock acquisition attempt failed for %s - retrying..." % scan)
                    self.warned[scan] = time.time()
                time.sleep(self.retry_sleep)
                continue
            self.write_info(scan, mode, user)
            return fd
        raise LockTimeout(scan)

    def write_info(self, scan, mode, user):
        info = {
            "scan_id": scan,
            "lock_type": mode,
            "user": user,
            "timestamp": time.time(),
            "pid": os.getpid(),
            "thread_id": threading.get_ident(),
        }
        with open(self.info_path(scan), "w") as f:
            json.dump(info, f, indent=2)

    def release(self, scan, fd):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if self.release_pause > 0:
            time.sleep(self.release_pause)
        for p in (self.lock_path(scan), self.info_path(scan)):
            try:
                os.unlink(p)
            except OSError as e:
                if p == self.lock_path(scan):
                    self.log("ERROR", "Error removing lock file for %s: %s" % (scan, e))


def out(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def cmd_hold(locks, a):
    fd = locks.acquire(a.scan, a.mode, a.user, a.timeout)
    out("granted", time.monotonic_ns())
    sys.stdin.readline()
    t = time.monotonic_ns()
    out("released", t)
    locks.release(a.scan, fd)


def cmd_bench(locks, a):
    n = a.n
    start = time.perf_counter_ns()
    for _ in range(n):
        fd = locks.acquire(a.scan, a.mode, a.user, a.timeout)
        locks.release(a.scan, fd)
    elapsed = time.perf_counter_ns() - start
    out("ns_per_op", "%.1f" % (elapsed / n), "ops", n)


def cmd_intervals(locks, a):
    for _ in range(a.n):
        fd = locks.acquire(a.scan, a.mode, a.user, a.timeout)
        begin = time.monotonic_ns()
        if a.hold_ms > 0:
            time.sleep(a.hold_ms / 1000)
        end = time.monotonic_ns()
        locks.release(a.scan, fd)
        out("interval", a.mode, begin, end)
        if a.gap_ms > 0:
            time.sleep(a.gap_ms / 1000)
    out("done")


def cmd_increment(locks, a):
    for _ in range(a.n):
        fd = locks.acquire(a.scan, "exclusive", a.user, a.timeout)
        try:
            increment(a.counter)
        finally:
            locks.release(a.scan, fd)
    out("done", a.n)


def cmd_serve(locks, a):
    """The benchmark's interactive protocol (see the module doc)."""
    say_lock = threading.Lock()

    def say(*words):
        with say_lock:
            out(*words)

    held = None
    reader = {"thread": None, "stop": threading.Event(), "intervals": [], "error": None}

    def reader_loop(hold):
        try:
            while not reader["stop"].is_set():
                fd = locks.acquire(a.scan, "shared", a.user, a.timeout)
                t0 = time.monotonic_ns()
                time.sleep(hold)
                t1 = time.monotonic_ns()
                locks.release(a.scan, fd)
                reader["intervals"] += [t0, t1]
        except Exception as e:  # reported on "stop"
            reader["error"] = e

    say("ready")
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        cmd = f[0]
        if cmd == "quit":
            break
        if cmd == "acquire":
            t0 = time.monotonic_ns()
            say("waiting", t0)
            try:
                held = locks.acquire(a.scan, f[1], a.user, int(f[2]) / 1000.0)
                say("ok", t0, time.monotonic_ns())
            except LockTimeout:
                say("timeout", t0, time.monotonic_ns())
        elif cmd == "release":
            t0 = time.monotonic_ns()
            locks.release(a.scan, held)
            held = None
            say("released", t0, time.monotonic_ns())
        elif cmd == "loop":
            start = time.monotonic_ns()
            for _ in range(int(f[2])):
                locks.release(a.scan, locks.acquire(a.scan, f[1], a.user, a.timeout))
            say("loop", time.monotonic_ns() - start)
        elif cmd == "readers":
            hold = int(f[1]) / 1e6
            reader["thread"] = threading.Thread(target=reader_loop, args=(hold,), daemon=True)
            reader["thread"].start()
            say("reading")
        elif cmd == "stop":
            reader["stop"].set()
            reader["thread"].join()
            if reader["error"] is not None:
                raise SystemExit("reader failed: %r" % reader["error"])
            say("intervals", *reader["intervals"])
        else:
            raise SystemExit("bad command %r" % line)
    if held is not None:
        locks.release(a.scan, held)


def increment(path):
    fd = os.open(path, os.O_RDWR)
    try:
        data = os.pread(fd, 64, 0)
        first, second = data.split()
        if len(data) != 22 or first != second:
            raise SystemExit("torn counter file: %r" % data)
        v = int(first) + 1
        os.pwrite(fd, b"%010d" % v, 0)
        os.pwrite(fd, b" %010d\n" % v, 10)
    finally:
        os.close(fd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["hold", "bench", "intervals", "increment", "serve"])
    p.add_argument("root")
    p.add_argument("scan")
    p.add_argument("--mode", choices=["shared", "exclusive"], default="exclusive")
    p.add_argument("--user", default="plantdb-peer")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("-n", type=int, default=1)
    p.add_argument("--hold-ms", type=float, default=0.0)
    p.add_argument("--gap-ms", type=float, default=0.0)
    p.add_argument("--retry-sleep", type=float, default=0.1, help="sleep between attempts (plantdb: 0.1 s)")
    p.add_argument("--release-pause", type=float, default=0.0, help="sleep between close and unlink on release")
    p.add_argument("--counter", help="counter file for increment")
    p.add_argument("--stall-first-open", action="store_true",
                   help='after the first open of the lock file print "opened" and wait for a line on stdin before its flock')
    p.add_argument("--constructor", action="store_true",
                   help="do the constructor's steps: write probe, log file, stale clean-up")
    a = p.parse_args()
    locks = PlantdbLocks(a.root, a.retry_sleep, a.release_pause, a.constructor, a.stall_first_open)
    try:
        {"hold": cmd_hold, "bench": cmd_bench, "intervals": cmd_intervals, "increment": cmd_increment, "serve": cmd_serve}[a.command](locks, a)
    except LockTimeout:
        out("timeout")
        sys.exit(EXIT_TIMEOUT)


if __name__ == "__main__":
    main()
