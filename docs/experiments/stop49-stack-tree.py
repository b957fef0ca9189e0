#!/usr/bin/env python3
"""Inclusive shares of the functions called under one function, from `perf script` output of
a frame-pointer build (docs/performance.md, "Engine round 32"):

    RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --target-dir /tmp/fptarget
    perf record -F 2000 --call-graph fp -o /tmp/p.data \
        /tmp/fptarget/release/profiledb bench --data /tmp/pf --calls 1000000
    # the load's window: first and last sample in W1::next_call (the bench's call generator)
    W=$(perf script -i /tmp/p.data -G -F comm,tid,time,ip,sym | awk '/next_call/ \
        {t=$3; sub(":","",t); t+=0; if(!s) s=t; e=t} END {printf "%.3f,%.3f", s, e}')
    perf script -i /tmp/p.data --time $W -F comm,tid,ip,sym --comm profiledb > /tmp/stacks.txt
    python3 docs/experiments/stop49-stack-tree.py /tmp/stacks.txt 'Engine>::write_call' 3
"""
import collections
import sys

path, root = sys.argv[1], sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 3
samples, cur = [], None
for line in open(path, errors="replace"):
    line = line.rstrip("\n")
    if not line.startswith("\t"):
        if cur:
            samples.append(cur)
        cur = []
        continue
    parts = line.strip().split(" ", 1)
    cur.append(parts[1] if len(parts) > 1 else parts[0])
if cur:
    samples.append(cur)
tree = collections.Counter()
n = 0
for stack in samples:
    stack = stack[::-1]  # outermost first
    at = next((i for i, s in enumerate(stack) if root in s), None)
    if at is None:
        continue
    n += 1
    path_ = tuple(stack[at + 1 : at + 1 + depth])
    for d in range(1, len(path_) + 1):
        tree[path_[:d]] += 1
print(f"{len(samples)} samples, {n} under {root}")


def show(prefix, level):
    kids = [(k, v) for k, v in tree.items() if len(k) == len(prefix) + 1 and k[:-1] == prefix]
    for k, v in sorted(kids, key=lambda kv: -kv[1]):
        if n and v / n >= 0.01:
            print("  " * level + f"{100 * v / n:5.1f}% {k[-1][:110]}")
            show(k, level + 1)


show((), 0)
