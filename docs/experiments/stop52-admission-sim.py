#!/usr/bin/env python3
"""W1's calls (200,000 people, 80 % of 1,000,000 calls to a hot 20 %) against a CLOCK of CAP
equal slots, without admission or with a doorkeeper of two generations of GEN refused keys:
the share of loads (calls on a person seen before) that find the person cached.
docs/performance.md, "Engine round 35"; docs/architecture.md, "Which profiles the writer
cache keeps".

    python3 docs/experiments/stop52-admission-sim.py 42000 0      # CLOCK alone
    python3 docs/experiments/stop52-admission-sim.py 42000 4000   # doorkeeper, 4,000 a generation
"""
import random
import sys

random.seed(1)
PEOPLE, HOT, CALLS = 200_000, 40_000, 1_000_000
cap, gen = int(sys.argv[1]), int(sys.argv[2])
slots, ref, where, free, hand = [None] * cap, [False] * cap, {}, list(range(cap)), 0
seen, now, before = set(), set(), set()
hits = loads = refused = 0


def admit(k):
    """The doorkeeper: let in a key refused lately (and forget it), else remember it."""
    global now, before
    if k in now or k in before:
        now.discard(k)
        before.discard(k)
        return True
    if len(now) >= gen:
        before, now = now, set()
    now.add(k)
    return False


def insert(k):
    global hand, refused
    if free:
        i = free.pop()
        slots[i], ref[i], where[k] = k, False, i
        return
    if gen and not admit(k):
        refused += 1
        return
    while True:
        if hand >= cap:
            hand = 0
        if slots[hand] is not None:
            if not ref[hand]:
                break
            ref[hand] = False
        hand += 1
    del where[slots[hand]]
    slots[hand], ref[hand], where[k] = k, False, hand
    hand += 1


for _ in range(CALLS):
    p = random.randrange(HOT) if random.random() < 0.8 else HOT + random.randrange(PEOPLE - HOT)
    if p not in seen:
        seen.add(p)
        insert(p)
        continue
    loads += 1
    if p in where:
        hits += 1
        ref[where[p]] = True
    else:
        insert(p)
print(f"slots {cap} generation {gen}: {100 * hits / loads:.1f} % of loads hit, {refused} refused")
