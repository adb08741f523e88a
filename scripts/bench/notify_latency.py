#!/usr/bin/env python3
"""How long a name created or removed on SOURCE takes to show through a mount.

Usage: notify_latency.py SOURCE MOUNTPOINT N

MOUNTPOINT must be `scanlockfs mount --entry-timeout 1h --attr-timeout 1h
--negative-timeout 1h SOURCE MOUNTPOINT`, with a directory SOURCE/scan1, so
that only change notification can make the kernel see the change. N times:
stat the name through the mount (the kernel caches its absence), create it
on SOURCE, and time how long stat through the mount takes to find it (busy
polling); then the same for its removal. Prints the median, 99th percentile
and maximum in microseconds.
"""
import os
import sys
import time


def exists(p):
    try:
        os.stat(p)
        return True
    except FileNotFoundError:
        return False


def wait(pred):
    t0 = time.monotonic_ns()
    while not pred():
        pass
    return (time.monotonic_ns() - t0) / 1000.0


def main():
    src, mnt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    created, removed = [], []
    for i in range(n):
        s = os.path.join(src, "scan1", "lat%d" % i)
        m = os.path.join(mnt, "scan1", "lat%d" % i)
        if exists(m):
            sys.exit("%s exists before the test" % m)
        open(s, "w").close()
        created.append(wait(lambda: exists(m)))
        os.unlink(s)
        removed.append(wait(lambda: not exists(m)))
    for what, v in (("created", created), ("removed", removed)):
        v.sort()
        print("%s: p50 %.0f us, p99 %.0f us, max %.0f us (n=%d)"
              % (what, v[len(v) // 2], v[int(len(v) * 0.99)], v[-1], len(v)))


if __name__ == "__main__":
    main()
