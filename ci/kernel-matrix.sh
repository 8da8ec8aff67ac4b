#!/usr/bin/env bash
# The five mission behaviours (IPv4, every built-in target) on this machine's kernel and under other
# kernels, then what differs: `python3 -m conformance compare` (verdicts and key values) and
# `python3 -m conformance kernel --summary` (how each was booted, how long it took, each case's timing).
# This is how the numbers in docs/kernels.md were made. Run as root from anywhere:
#
#   bash ci/kernel-matrix.sh [OUT_DIR]        (default ./kernel-results, made private)
#   KERNEL_RUNS="6.1:uml 6.12:tcg" bash ci/kernel-matrix.sh   (VERSION:WAY pairs; default below)
#
# A run whose way to boot this machine lacks is reported by `kernel` (exit 4) and left out.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=$(realpath -m "${1:-kernel-results}")
mkdir -p "$out" && chmod 700 "$out"
runs=${KERNEL_RUNS:-"6.1:uml 6.1:tcg 6.12:tcg"}
sel="test_handshake or test_refused or test_timedout or test_queue_full or test_time_wait"
cases=(tests/cases -k "$sel" --families v4 -n 8)
# Emulation slows everything the harness waits for; the kernel's own timers are not scaled.
slack() { case $1 in tcg) echo 10 ;; uml) echo 3 ;; *) echo 1 ;; esac; }

echo "== host ($(uname -r))"
start=$(date +%s)
"$PY" -m pytest "${cases[@]}" --results-json "$out/host.json" --html "$out/host.html" >"$out/host.log" 2>&1
echo "   exit $?, $(($(date +%s) - start)) s (log: $out/host.log)"
done_runs=(host)
for run in $runs; do
  version=${run%%:*} way=${run##*:} name="k${run//[.:]/}"
  echo "== $version by $way"
  start=$(date +%s)
  "$PY" -m conformance kernel "$version" --boot "$way" -- "${cases[@]}" \
    --timing-slack "$(slack "$way")" --agent-deadline 60 \
    --results-json "$out/$name.json" --html "$out/$name.html" --junitxml "$out/$name.xml" \
    --pcap-dir "$out/$name-pcaps" >"$out/$name.log" 2>&1
  rc=$?
  echo "   exit $rc, $(($(date +%s) - start)) s (log: $out/$name.log)"
  [ -f "$out/$name.json" ] && done_runs+=("$name") || tail -3 "$out/$name.log"
done

for name in "${done_runs[@]:1}"; do
  echo
  "$PY" -m conformance compare "$out/host.json" "$out/$name.json" --exit-zero
done
files=()
for name in "${done_runs[@]}"; do files+=("$out/$name.json"); done
echo
"$PY" -m conformance kernel --summary "${files[@]}" --target c
