#!/usr/bin/env bash
# The five mission behaviours (IPv4, every built-in target) on this machine's kernel and under other
# kernels, then what differs: `python3 -m conformance compare` (verdicts and key values) and
# `python3 -m conformance kernel --summary` (how each was booted, how long it took, each case's timing).
# This is how the numbers in docs/kernels.md were made. Run as root from anywhere:
#
#   bash ci/kernel-matrix.sh [OUT_DIR]        (default ./kernel-results, made private)
#   KERNEL_RUNS="6.1:uml 6.12:tcg" bash ci/kernel-matrix.sh   (VERSION:WAY pairs; default below)
#   DECLARED=kernel-differences.toml KERNEL_RUNS=6.1:uml bash ci/kernel-matrix.sh   (as .ci/run does)
#
# Without DECLARED it only reports: a run whose way to boot this machine lacks is reported by `kernel`
# (exit 4) and left out, and the exit code is 0. With DECLARED (a file of declared kernel differences)
# it is a check: it exits 1 when a run fails or collects nothing, when a guest run ends without results,
# or when `compare --declared` finds a difference the file does not declare (or one it declares gone).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=$(realpath -m "${1:-kernel-results}")
mkdir -p "$out" && chmod 700 "$out"
runs=${KERNEL_RUNS:-"6.1:uml 6.1:tcg 6.12:tcg"}
declared=${DECLARED:-}
sel="test_handshake or test_refused or test_timedout or test_queue_full or test_time_wait"
cases=(tests/cases -k "$sel" --families v4)
# Emulation slows everything the harness waits for; the kernel's own timers are not scaled.
slack() { case $1 in tcg) echo 10 ;; uml) echo 3 ;; *) echo 1 ;; esac; }
# UML has one CPU: 2 workers take no longer there than 8 (about 200 s either way, measured), and eight
# agents at once on one CPU slowed Node's event loop past the cases' tolerances (refused in 1.7 s).
workers() { case $1 in uml) echo 2 ;; *) echo 8 ;; esac; }
failed=()
# A run's exit code: 0 is a pass; anything else (5: no tests collected) fails the check.
note() { [ "$2" -eq 0 ] || { failed+=("$1 (exit $2)"); tail -25 "$3"; }; }

echo "== host ($(uname -r)): pytest ${cases[*]} (cases in flight)"
start=$(date +%s)
"$PY" -m pytest "${cases[@]}" --results-json "$out/host.json" --html "$out/host.html" >"$out/host.log" 2>&1
rc=$?
echo "   exit $rc, $(($(date +%s) - start)) s (log: $out/host.log)"
note host "$rc" "$out/host.log"
done_runs=(host)
for run in $runs; do
  version=${run%%:*} way=${run##*:} name="k${run//[.:]/}"
  echo "== $version by $way: the same selection in a guest (-n $(workers "$way") --timing-slack $(slack "$way") --agent-deadline 60)"
  start=$(date +%s)
  "$PY" -m conformance kernel "$version" --boot "$way" -- "${cases[@]}" -n "$(workers "$way")" \
    --timing-slack "$(slack "$way")" --agent-deadline 60 \
    --results-json "$out/$name.json" --html "$out/$name.html" --junitxml "$out/$name.xml" \
    --pcap-dir "$out/$name-pcaps" >"$out/$name.log" 2>&1
  rc=$?
  echo "   exit $rc, $(($(date +%s) - start)) s (log: $out/$name.log)"
  grep -E '^kernel: .* by ' "$out/$name.log" | tail -1 | sed 's/^/   /'
  note "$version by $way" "$rc" "$out/$name.log"
  [ -f "$out/$name.json" ] && done_runs+=("$name") || tail -3 "$out/$name.log"
done

for name in "${done_runs[@]:1}"; do
  echo
  if [ -n "$declared" ]; then
    echo "== compare host with $name (declared kernel differences: $declared)"
    "$PY" -m conformance compare "$out/host.json" "$out/$name.json" --declared "$declared" || failed+=("compare host $name")
  else
    "$PY" -m conformance compare "$out/host.json" "$out/$name.json" --exit-zero
  fi
done
files=()
for name in "${done_runs[@]}"; do files+=("$out/$name.json"); done
echo
[ -f "$out/host.json" ] && "$PY" -m conformance kernel --summary "${files[@]}" --target c
[ -z "$declared" ] && exit 0
echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'kernel-matrix: FAILED: %s\n' "$(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
echo "kernel-matrix: ok: every run passed; every difference from the host is declared in $declared"
