"""Where the writer thread of `compare --only pdb-group` is off the CPU (engine round 53).

Input: `perf script -F comm,tid,time,event,trace,ip,sym` of a system-wide
`perf record -a -e sched:sched_switch --call-graph dwarf,8192` (system-wide, so that the
switch back to the thread is recorded too). The writer is the `compare` thread with the most
switches (the child that runs the calls). Prints its time off the CPU by the state it left in
(S: waiting, D: uninterruptible I/O, R: preempted) and the first frames of its stack, largest
first. The run's setup and the final `Db::compact` after the timed calls are included: read the
stacks (`Inner::compact` on the calls thread is that final compaction).
"""

import collections
import re
import sys

SWITCH = re.compile(
    r"prev_comm=(.*) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)"
)


def events(path):
    for block in open(path).read().split("\n\n"):
        lines = block.strip().split("\n")
        if not lines or "sched_switch" not in lines[0]:
            continue
        head = lines[0]
        time = float(re.search(r" (\d+\.\d+):", head).group(1))
        prev_comm, prev, state, next_comm, nxt = SWITCH.search(head).groups()
        frames = [l.strip().split(None, 1)[1] for l in lines[1:] if len(l.strip().split(None, 1)) > 1]
        yield time, prev_comm, prev, state, next_comm, nxt, frames


def main(path):
    evs = list(events(path))
    switches = collections.Counter(e[2] for e in evs if e[1] == "compare")
    writer = switches.most_common(1)[0][0]
    print("writer thread", writer, "switches by compare thread:", dict(switches))
    out, total, count = None, collections.Counter(), collections.Counter()
    for time, _, prev, state, _, nxt, frames in evs:
        if prev == writer:
            ours = [f for f in frames if "profiledb" in f or "compare" in f][:2]
            key = (state, tuple(frames[3:6]), tuple(ours))
            out = (time, key)
        if nxt == writer and out:
            total[out[1]] += time - out[0]
            count[out[1]] += 1
            out = None
    print("off the CPU in all: %.3f s" % sum(total.values()))
    for key, secs in total.most_common(25):
        print("%8.1f ms %6d  %s" % (secs * 1e3, count[key], key))


if __name__ == "__main__":
    main(sys.argv[1])
