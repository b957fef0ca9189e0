#!/usr/bin/env python3
"""What an fdatasync costs after appending to a file, against after overwriting bytes of a
file already written that far (zeros written and synced ahead, as a preallocated segment
would be): docs/performance.md, "Engine round 26".

    python3 docs/experiments/stop43-fdatasync-overwrite-probe.py [DIR] [WRITE_BYTES]

Prints the median and mean microseconds of `pwrite` + `fdatasync`, 300 of each kind, three
rounds. DIR defaults to the current directory (it must be on the disk being measured, not a
tmpfs); WRITE_BYTES to 16384 (about what one sync of 64 durable callers carries).
"""
import os
import sys
import time


def probe(directory, prealloc, size, n=300):
    path = os.path.join(directory, "fdatasync-probe.bin")
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    try:
        if prealloc:
            os.write(fd, b"\0" * (n * size + 4096))
            os.fsync(fd)
        buf = b"x" * size
        times = []
        for i in range(n):
            t = time.perf_counter()
            os.pwrite(fd, buf, i * size)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return times[len(times) // 2] * 1e6, sum(times) / len(times) * 1e6


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 16384
    for _ in range(3):
        a = probe(directory, False, size)
        o = probe(directory, True, size)
        print(
            "append p50 %.0f us mean %.0f us | overwrite p50 %.0f us mean %.0f us"
            % (a[0], a[1], o[0], o[1])
        )


if __name__ == "__main__":
    main()
