#!/usr/bin/env python3
"""Where a W1 run's heap allocations come from, by thread role and by allocation site.

Reads the DHAT profile of `compare`'s profiledb child (docs/performance.md, round 38):

    cargo build --release --manifest-path peers/Cargo.toml --bin compare
    valgrind --tool=dhat --trace-children=yes --dhat-out-file=/tmp/dhat.%p.json \
        peers/target/release/compare --only pdb-group --dir /tmp/cmpdh
    python3 docs/experiments/stop55-dhat-allocations.py /tmp/dhat.<child pid>.json 1000000

(the child is the larger of the two files). Blocks are grouped by the frames of their
allocation stack: the W1 generator (outside the timed part of `compare`), the compaction
(its own thread), the writer (`Db::write_call`: what a call costs the caller's thread),
and the rest.
"""
import json
import re
import sys

profile = json.load(open(sys.argv[1]))
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
frames = profile["ftbl"]


def role(stack):
    if "workload" in stack:
        return "W1 generator"
    if "compact" in stack:
        return "compaction"
    if "write_call" in stack:
        return "writer"
    return "other"


groups = {}
writer_sites = {}
for pp in profile["pps"]:
    stack = " ".join(frames[i] for i in pp["fs"])
    r = role(stack)
    blocks, nbytes = groups.get(r, (0, 0))
    groups[r] = (blocks + pp["tbk"], nbytes + pp["tb"])
    if r == "writer":
        names = [m.group(1) for f in (frames[i] for i in pp["fs"])
                 if (m := re.search(r"(profiledb::[^ (]*)", f))]
        site = " <- ".join(names[:3])
        b, n = writer_sites.get(site, (0, 0))
        writer_sites[site] = (b + pp["tbk"], n + pp["tb"])

print(f"{'role':<14} {'blocks':>12} {'per call':>9} {'MB':>9}")
for r, (blocks, nbytes) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
    print(f"{r:<14} {blocks:>12,} {blocks / calls:>9.2f} {nbytes / 1e6:>9.1f}")
print("\nwriter, by site (blocks a call, bytes a block):")
for site, (blocks, nbytes) in sorted(writer_sites.items(), key=lambda kv: -kv[1][0])[:15]:
    print(f"{blocks / calls:>6.3f} {nbytes // max(blocks, 1):>6}  {site[:150]}")
