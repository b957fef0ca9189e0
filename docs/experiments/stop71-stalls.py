"""Read the stderr of `profiledb bench` built with stop71-stall-attribution.patch: each call of
1 ms or more (STALL: its phases in us) and each lock hold of 0.2 ms or more of the background
threads (HOLD: what, when, how long; HINTHOLD: the hint's upgradable lock, its fill apart).
Prints the stalls by the phase that took most of each, the lock-wait stalls by the hold that
overlapped them, and the holds by kind.

usage: python3 stop71-stalls.py bench.err
"""
import collections
import sys

PHASES = ['lockwait', 'cachelock', 'build', 'finish', 'append', 'insert', 'upgrade', 'commit', 'tail']

rows, holds = [], []
for line in open(sys.argv[1]):
    parts = line.split()
    if not parts:
        continue
    if parts[0] == 'STALL':
        rows.append({k: float(v) for k, v in (kv.split('=') for kv in parts[1:])})
    elif parts[0] in ('HOLD', 'HINTHOLD'):
        kv = dict(p.split('=') for p in parts[1:] if '=' in p)
        what = parts[1] if parts[0] == 'HOLD' else 'hint-lock'
        dur = int(kv['dur']) if 'dur' in kv else int(kv['total'])
        holds.append((what, float(kv['at']), dur))

print(f"{len(rows)} stalls, {sum(r['total'] for r in rows) / 1e3:.1f} ms in them")
count, ms = collections.Counter(), collections.Counter()
for r in rows:
    k = max(PHASES, key=lambda p: r[p])
    count[k] += 1
    ms[k] += r['total'] / 1e3
print('by the phase that took most (stalls, ms):', {k: (count[k], round(ms[k], 1)) for k in count})
count, ms = collections.Counter(), collections.Counter()
for r in rows:
    if r['lockwait'] < 0.5 * r['total']:
        continue
    start, end = r['at'], r['at'] + r['total'] / 1e6
    near = 'none'
    for what, at, dur in holds:
        if what != 'hint' and at <= end and at + dur / 1e6 >= start:
            near = what
    count[near] += 1
    ms[near] += r['lockwait'] / 1e3
print('lock-wait stalls by the hold beside them (stalls, ms):', {k: (count[k], round(ms[k], 1)) for k in count})
by = collections.defaultdict(list)
for what, at, dur in holds:
    by[what].append(dur / 1e3)
print('holds (count, total ms, longest ms):', {k: (len(v), round(sum(v), 1), round(max(v), 1)) for k, v in by.items()})
