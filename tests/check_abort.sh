#!/usr/bin/env bash
# One rank's error must end a 2-rank job quickly, with non-zero status and the rank's message.
# usage: check_abort.sh MPIEXEC ORTHOSHARD
set -u
mpiexec=$1 bin=$2
start=$(date +%s)
out=$(timeout 60 "$mpiexec" --oversubscribe -n 2 "$bin" selfcheck --inject-failure 1 2>&1)
rc=$?
elapsed=$(( $(date +%s) - start ))
echo "$out"
echo "exit status $rc after ${elapsed}s"
[ "$rc" -ne 0 ] || { echo "FAIL: job exited 0"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAIL: job hung (killed by timeout)"; exit 1; }
echo "$out" | grep -q "\[rank 1/2\] error: injected failure on rank 1" || { echo "FAIL: message missing"; exit 1; }
[ "$elapsed" -le 20 ] || { echo "FAIL: took ${elapsed}s to end"; exit 1; }
echo "PASS"
