#!/usr/bin/env python3
"""Syncs a second on this disk when 1, 2, 4 or 8 threads each append 16 KiB to one file and
fdatasync it, concurrently (docs/performance.md, "Engine round 32"). Usage:
    python3 docs/experiments/stop49-concurrent-fdatasync-probe.py [DIR]
"""
import os
import sys
import threading
import time

path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "syncprobe.dat")
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
lock = threading.Lock()
end = [0]


def worker(done):
    buf = os.urandom(16384)
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < 3:
        with lock:
            at = end[0]
            end[0] += len(buf)
        os.pwrite(fd, buf, at)
        os.fdatasync(fd)
        n += 1
    done.append(n)


for threads in (1, 2, 4, 8):
    done = []
    ts = [threading.Thread(target=worker, args=(done,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{threads} threads: {sum(done) / 3:.0f} fdatasyncs/s")
os.close(fd)
os.unlink(path)
