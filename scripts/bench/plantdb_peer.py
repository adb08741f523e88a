#!/usr/bin/env python3
"""A lock peer that follows plantdb's ScanLockManager protocol, for the
benchmark (workload 7). Standard library only.

Protocol on disk, as plantdb does it: ROOT/.locks/SCAN.lock is opened with
O_CREAT|O_WRONLY|O_TRUNC and locked with flock(LOCK_SH or LOCK_EX |
LOCK_NB), retried every 0.1 s until the timeout; ROOT/.locks/SCAN.info gets
JSON metadata; release is LOCK_UN, close, then unlink of the lock file and
of the info file.

Commands on stdin, answers on stdout (CLOCK_MONOTONIC nanoseconds, the
same clock as the Go peer):
  acquire shared|exclusive TIMEOUT_MS -> "waiting T0", then "ok T0 T1" or "timeout T0 T1"
  release                             -> "released T0 T1"
  loop shared|exclusive N             -> "loop TOTAL_NS"   (N uncontended acquire+release)
  readers HOLD_US                     -> "reading"; a thread takes the shared lock, holds it
                                         HOLD_US, releases and takes it again until "stop"
  stop                                -> "intervals T0 T1 T0 T1 ..." (the reader thread's holds)
  quit (or end of input)
"""

import fcntl
import getpass
import json
import os
import sys
import threading
import time

POLL_INTERVAL = 0.1  # plantdb's sleep between attempts


class Timeout(Exception):
    pass


class PlantdbLock:
    def __init__(self, root, scan):
        self.scan = scan
        self.lock_dir = os.path.join(root, ".locks")
        os.makedirs(self.lock_dir, exist_ok=True)
        self.lock_path = os.path.join(self.lock_dir, scan + ".lock")
        self.info_path = os.path.join(self.lock_dir, scan + ".info")
        try:
            self.user = getpass.getuser()
        except Exception:
            self.user = str(os.getuid())

    def acquire(self, exclusive, timeout):
        op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        start = time.monotonic()
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o664)
            try:
                fcntl.flock(fd, op)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() - start >= timeout:
                    raise Timeout()
                time.sleep(POLL_INTERVAL)
                continue
            self._write_info(exclusive)
            return fd

    def _write_info(self, exclusive):
        info = {
            "scan_id": self.scan,
            "lock_type": "exclusive" if exclusive else "shared",
            "user": self.user,
            "timestamp": time.time(),
            "pid": os.getpid(),
            "thread_id": threading.get_ident(),
        }
        with open(self.info_path, "w") as f:
            json.dump(info, f)

    def release(self, fd):
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        for p in (self.lock_path, self.info_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def main():
    if len(sys.argv) != 3:
        print("usage: plantdb_peer.py ROOT SCAN", file=sys.stderr)
        return 2
    lock = PlantdbLock(sys.argv[1], sys.argv[2])
    out = threading.Lock()

    def say(*words):
        with out:
            print(" ".join(str(w) for w in words), flush=True)

    held = None
    reader = {"thread": None, "stop": threading.Event(), "intervals": [], "error": None}

    def reader_loop(hold):
        try:
            while not reader["stop"].is_set():
                fd = lock.acquire(False, 30.0)
                t0 = time.monotonic_ns()
                time.sleep(hold)
                t1 = time.monotonic_ns()
                lock.release(fd)
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
            exclusive = f[1] == "exclusive"
            timeout = int(f[2]) / 1000.0
            t0 = time.monotonic_ns()
            say("waiting", t0)
            try:
                held = lock.acquire(exclusive, timeout)
                say("ok", t0, time.monotonic_ns())
            except Timeout:
                say("timeout", t0, time.monotonic_ns())
        elif cmd == "release":
            t0 = time.monotonic_ns()
            lock.release(held)
            held = None
            say("released", t0, time.monotonic_ns())
        elif cmd == "loop":
            exclusive = f[1] == "exclusive"
            n = int(f[2])
            start = time.monotonic_ns()
            for _ in range(n):
                lock.release(lock.acquire(exclusive, 30.0))
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
                print("reader failed: %r" % reader["error"], file=sys.stderr)
                return 1
            say("intervals", *reader["intervals"])
        else:
            print("bad command %r" % line, file=sys.stderr)
            return 1
    if held is not None:
        lock.release(held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
