#!/bin/bash
# Round 54 (docs/performance.md): one `profiledb bench --calls 1000000` with the store's
# background threads given another CPU priority from outside as soon as they exist, to see
# whether the writer gains. Every mode runs the same watching loop (a loop that forked more in
# some modes than in others made those ~5 % slower on two cores).
# usage: stop71-renice-run.sh BIN MODE
#   MODE: none | c19 | c10 | cidle (the compaction thread at nice 19, nice 10, SCHED_IDLE)
#         | gbatch (the group-commit thread SCHED_BATCH) | c19gbatch (both)
bin=$1; mode=$2; d=/tmp/rn-$$; rm -rf $d
$bin bench --data $d --calls 1000000 > /tmp/rn-out.$$ 2>/dev/null &
pid=$!
if true; then
  ( done_tids=" "; for i in $(seq 1 300); do
    sleep 0.02
    for t in /proc/$pid/task/*; do
      tid=$(basename $t); case "$done_tids" in *" $tid "*) continue;; esac
      read -r c < $t/comm 2>/dev/null
      case "$c" in profiledb-compa|profiledb-group) done_tids="$done_tids$tid ";; esac
      case "$mode:$c" in
        c19:profiledb-compa|c19gbatch:profiledb-compa) renice -n 19 -p $tid >/dev/null 2>&1;;
        c10:profiledb-compa) renice -n 10 -p $tid >/dev/null 2>&1;;
        cidle:profiledb-compa) chrt -i -p 0 $tid >/dev/null 2>&1;;
        gbatch:profiledb-group|c19gbatch:profiledb-group) chrt -b -p 0 $tid >/dev/null 2>&1;;
      esac
    done
  done ) &
fi
wait $pid
echo "$mode $(grep -E "throughput|stalls" /tmp/rn-out.$$ | tr -s ' ' | tr '\n' ' ')"
rm -rf $d /tmp/rn-out.$$
