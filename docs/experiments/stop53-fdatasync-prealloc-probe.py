#!/usr/bin/env python3
"""What one write + fdatasync costs on this machine's disk, three ways (engine round 36,
docs/performance.md): appending to a file (its size and blocks change with every sync),
over space reserved by posix_fallocate (unwritten extents, converted at each sync), and over
zeros written and synced beforehand (only data to flush).

    python3 docs/experiments/stop53-fdatasync-prealloc-probe.py [DIR] [WRITES] [BYTES]

DIR defaults to the current directory (use the disk the store lives on); WRITES 3000; BYTES
17000 (what a sync of 64 durable callers carries, ~27 W1 calls with their history).
"""
import os
import sys
import time


def run(directory, mode, n, size):
    path = os.path.join(directory, "fdatasync-probe.bin")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        if mode == "zeros written ahead":
            chunk = b"\0" * (1 << 20)
            for _ in range((n * size) // len(chunk) + 1):
                os.write(fd, chunk)
            os.fsync(fd)
            os.lseek(fd, 0, 0)
        elif mode == "posix_fallocate":
            os.posix_fallocate(fd, 0, n * size + 4096)
            os.fsync(fd)
        buf = b"x" * size
        t = time.time()
        for _ in range(n):
            os.write(fd, buf)
            os.fdatasync(fd)
        dt = time.time() - t
    finally:
        os.close(fd)
        os.unlink(path)
    print(f"{mode:22} {dt / n * 1e6:7.0f} us per write + fdatasync")


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 17000
    for mode in ["append", "posix_fallocate", "zeros written ahead"]:
        run(directory, mode, n, size)


if __name__ == "__main__":
    main()
