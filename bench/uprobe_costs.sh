#!/bin/sh
# Start/stop cost of `observer run` and the dining philosophers under --uprobes.
# Usage (root): sh bench/uprobe_costs.sh [OBSERVER] [N]   (default target/release/observer, 11)
# Prints medians of N runs of `run -- /bin/true` (unobserved /bin/true as the baseline, default
# mode, --uprobes with uprobe_multi links, --uprobes with one perf event per uprobe), then 20
# runs of fixtures/philosophers_ok.c (5 threads, 1000 rounds) under run --uprobes: each must
# exit 0 (no deadlock) with one 5-lock lock_order_inversion.
set -eu
OBS=${1:-target/release/observer}
N=${2:-11}
cd "$(dirname "$0")/.."
mkdir -p target/fixtures
gcc -O2 -g -pthread -o target/fixtures/philosophers_ok fixtures/philosophers_ok.c

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_ms LABEL CMD...: median wall time of N runs in ms
time_ms() {
	label=$1; shift
	m=$(for i in $(seq "$N"); do
		t0=$(now); "$@" >/dev/null 2>&1 || true; t1=$(now)
		echo $(( (t1 - t0) / 1000000 ))
	done | median)
	echo "$label: $m ms"
}
time_ms "unobserved /bin/true" /bin/true
time_ms "run -- /bin/true (default)" "$OBS" run -q -- /bin/true
time_ms "run --uprobes -- /bin/true (uprobe_multi)" "$OBS" run -q --uprobes -- /bin/true
time_ms "run --uprobes -- /bin/true (perf event per uprobe)" \
	env OBSERVER_UPROBE_MULTI=0 "$OBS" run -q --uprobes -- /bin/true

ok=0; bad=0
r=$(mktemp)
for i in $(seq 20); do
	if "$OBS" run -q --uprobes --report "$r" -- target/fixtures/philosophers_ok >/dev/null 2>&1 &&
		python3 -c '
import json, sys
f = [x for x in json.load(open(sys.argv[1]))["findings"] if x["kind"] == "lock_order_inversion"]
sys.exit(0 if len(f) == 1 and len(f[0]["cycle"]) == 5 else 1)' "$r"; then
		ok=$((ok + 1))
	else
		bad=$((bad + 1))
	fi
done
rm -f "$r"
echo "philosophers_ok under run --uprobes: $ok/20 no deadlock and the 5-lock inversion ($bad failed)"
