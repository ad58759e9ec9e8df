#!/usr/bin/env bash
# acks=1 against acks=all on a 3-broker loopback cluster (replication factor 3,
# min.insync.replicas=2), with a single-broker (RF 1) reference started next to
# it, so the report can separate the replication round trip from the fsync that
# corelog does before acking acks=all (topic config flush.on.ack.all=true).
#
# Usage: bash tuning/cluster-bench.sh            (about 15 minutes on 2 cores)
# Environment:
#   OUT       results directory   [tuning/results/<date>-cluster-acks]
#   REPEATS   rounds              [3]
#   DURATION  measured s per run  [10]      WARMUP  s per run [2]
#   RATE      open-loop msgs/s    [20000]
#   SIZES     message sizes run on the cluster            ["1024 100"]
#   SINGLE_SIZES  sizes also run on the single broker     ["1024"]
#   SKIP_BUILD=1  use target/release as it is
#
# Every run gets a fresh topic (6 partitions), deleted afterwards. In each
# round the variants run back to back in a fixed order (cluster acks=1,
# cluster acks=all, cluster acks=all without fsync, single acks=1, single
# acks=all, single acks=all without fsync), for each size and for the
# open-loop rate and then max (closed loop), so ratios compare runs taken
# a minute apart. Writes raw/<run>.json (loadgen --json-out, with HDR
# histograms) and raw/<run>.txt, runs.csv (one line per run, with the CPU
# time of the brokers), summary.md (medians and ratios), machine.json,
# loadavg.txt, commands.txt and the broker logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/tuning/results/$(date -u +%F)-cluster-acks}"
REPEATS="${REPEATS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
RATE="${RATE:-20000}"
SIZES="${SIZES:-1024 100}"
SINGLE_SIZES="${SINGLE_SIZES:-1024}"
PARTITIONS=6
PY="${PY:-$ROOT/.venv/bin/python}"
VOTERS="1@127.0.0.1:39301,2@127.0.0.1:39302,3@127.0.0.1:39303"
CLUSTER="127.0.0.1:39091,127.0.0.1:39092,127.0.0.1:39093"
SINGLE="127.0.0.1:39099"

WORK="$(mktemp -d /tmp/corelog-cluster-bench.XXXXXX)"
CLUSTER_PIDS=()
SINGLE_PID=""
cleanup() {
    for p in "${CLUSTER_PIDS[@]}" $SINGLE_PID; do kill "$p" 2>/dev/null || true; done
    for p in "${CLUSTER_PIDS[@]}" $SINGLE_PID; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    mkdir -p "$OUT/logs"
    cp "$WORK"/*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p corelog -p loadgen
fi
# Private copies: someone else's rebuild must not swap binaries mid-study.
mkdir -p "$WORK/bin" "$OUT/raw"
cp "$ROOT/target/release/corelog" "$ROOT/target/release/loadgen" "$WORK/bin/"
CORELOG="$WORK/bin/corelog"
LOADGEN="$WORK/bin/loadgen"

admin() { # admin wait BROKERS N | admin delete BROKERS TOPIC
    "$PY" - "$@" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient
cmd, brokers = sys.argv[1], sys.argv[2]
a = AdminClient({"bootstrap.servers": brokers, "log_level": 0})
if cmd == "wait":
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if len(a.list_topics(timeout=2).brokers) >= int(sys.argv[3]):
                sys.exit(0)
        except Exception:
            pass
        time.sleep(0.3)
    sys.exit(f"{brokers}: fewer than {sys.argv[3]} brokers after 60 s")
elif cmd == "delete":
    for f in a.delete_topics([sys.argv[3]], operation_timeout=10).values():
        try:
            f.result()
        except Exception as e:
            print(f"delete {sys.argv[3]}: {e}", file=sys.stderr)
PY
}

cpu_ticks() { # utime+stime of the given pids, summed, in clock ticks
    local t=0 p
    for p in "$@"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

{
    echo "# $(date -u +%FT%TZ) git $(git -C "$ROOT" rev-parse HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src || echo ' (src/ has uncommitted changes)')"
    echo "# corelog sha256 $(sha256sum "$CORELOG" | cut -c1-16), loadgen sha256 $(sha256sum "$LOADGEN" | cut -c1-16)"
} > "$OUT/commands.txt"
bash "$ROOT/tuning/machine.sh" "$WORK" > "$OUT/machine.json"
echo "start: $(cat /proc/loadavg)  ($(uptime))" > "$OUT/loadavg.txt"

for n in 1 2 3; do
    cmd=("$CORELOG" serve --node-id "$n" --listen "127.0.0.1:3909$n"
        --controller-listen "127.0.0.1:3930$n" --controller-voters "$VOTERS"
        --data-dir "$WORK/n$n" --cores 1)
    echo "${cmd[*]}" >> "$OUT/commands.txt"
    "${cmd[@]}" > "$WORK/broker$n.log" 2>&1 &
    CLUSTER_PIDS+=($!)
done
cmd=("$CORELOG" serve --listen "$SINGLE" --data-dir "$WORK/single" --cores 1)
echo "${cmd[*]}" >> "$OUT/commands.txt"
"${cmd[@]}" > "$WORK/single.log" 2>&1 &
SINGLE_PID=$!
admin wait "$CLUSTER" 3
admin wait "$SINGLE" 1

echo "round,setup,variant,acks,flush_on_ack_all,size,rate,msgs_per_s,mb_per_s,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,errors,loadgen_cpu_cores,broker_cpu_cores,json" > "$OUT/runs.csv"

# run ROUND CLUSTER(cluster|single) ACKS FLUSH SIZE RATE
run() {
    local round=$1 where=$2 acks=$3 flush=$4 size=$5 rate=$6
    local brokers rf misr pids variant name topic
    if [ "$where" = cluster ]; then
        brokers=$CLUSTER rf=3 misr=2 pids=("${CLUSTER_PIDS[@]}")
    else
        brokers=$SINGLE rf=1 misr=1 pids=("$SINGLE_PID")
    fi
    variant="acks=$acks"
    [ "$acks" = all ] && [ "$flush" = false ] && variant="acks=all no-fsync"
    name="r$round-$where-acks$acks-flush$flush-$size-$rate"
    topic="cb-$name"
    local cmd=("$LOADGEN" produce --brokers "$brokers" --topic "$topic"
        --create-partitions $PARTITIONS --replication-factor $rf
        --topic-config "min.insync.replicas=$misr" --topic-config "flush.on.ack.all=$flush"
        --acks "$acks" --rate "$rate" --message-size "$size"
        --duration "$DURATION" --warmup "$WARMUP" --quiet
        --json-out "$OUT/raw/$name.json")
    echo "${cmd[*]}" | sed "s#$WORK/bin/##g" >> "$OUT/commands.txt"
    local t0 t1 s0 s1
    t0=$(cpu_ticks "${pids[@]}"); s0=$(date +%s.%N)
    "${cmd[@]}" > "$OUT/raw/$name.txt" 2>&1 || echo "FAILED: $name" | tee -a "$OUT/raw/$name.txt"
    t1=$(cpu_ticks "${pids[@]}"); s1=$(date +%s.%N)
    admin delete "$brokers" "$topic"
    local bcpu
    bcpu=$(python3 -c "import os,sys; print(round(($t1-$t0)/os.sysconf('SC_CLK_TCK')/($s1-$s0),3))")
    python3 - "$OUT/raw/$name.json" "$round,$where,$variant,$acks,$flush,$size,$rate" "$bcpu" >> "$OUT/runs.csv" <<'PY'
import json, os, sys
path, head, bcpu = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    print(f"{head},,,,,,,,,,{bcpu},{os.path.basename(path)}")
    sys.exit()
p = d["produce"]; l = p["latency"]
errs = sum(p.get("errors", {}).values()) if isinstance(p.get("errors"), dict) else p.get("errors")
print(",".join(str(x) for x in [head, round(p["msgs_per_s"]), round(p["mb_per_s"], 2),
    l["p50_ms"], l["p90_ms"], l["p99_ms"], l["p999_ms"], l["max_ms"], errs,
    round(d["loadgen_cpu_cores"], 3), bcpu, "raw/" + os.path.basename(path)]))
PY
    tail -1 "$OUT/runs.csv"
}

for round in $(seq "$REPEATS"); do
    echo "round $round: $(cat /proc/loadavg)" | tee -a "$OUT/loadavg.txt"
    for size in $SIZES; do
        for rate in "$RATE" max; do
            run "$round" cluster 1 true "$size" "$rate"
            run "$round" cluster all true "$size" "$rate"
            run "$round" cluster all false "$size" "$rate"
            if [[ " $SINGLE_SIZES " == *" $size "* ]]; then
                run "$round" single 1 true "$size" "$rate"
                run "$round" single all true "$size" "$rate"
                run "$round" single all false "$size" "$rate"
            fi
        done
    done
done
echo "end: $(cat /proc/loadavg)" >> "$OUT/loadavg.txt"

# Medians over rounds, and per-round ratios to acks=1 on the same cluster
# (acks=1 run a minute earlier in the same round), medianed.
python3 - "$OUT/runs.csv" > "$OUT/summary.md" <<'PY'
import csv, statistics, sys
from collections import defaultdict
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["msgs_per_s"]]
cells = defaultdict(list)
for r in rows:
    cells[(r["setup"], r["size"], r["rate"], r["variant"])].append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
f = lambda k, rs: med([float(r[k]) for r in rs])
print("| setup | size B | rate | variant | n | msgs/s | MB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | broker cpu | loadgen cpu | msgs/s ÷ acks=1 | p50 ÷ acks=1 | p99 ÷ acks=1 |")
print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
order = {"acks=1": 0, "acks=all": 1, "acks=all no-fsync": 2}
for key in sorted(cells, key=lambda k: (k[0], -int(k[1]), k[2] == "max", order[k[3]])):
    rs = cells[key]
    base = {r["round"]: r for r in cells[(key[0], key[1], key[2], "acks=1")]}
    def ratio(k):
        xs = [float(r[k]) / float(base[r["round"]][k]) for r in rs if r["round"] in base]
        return f"{med(xs):.2f}"
    rate = "max (closed loop)" if key[2] == "max" else f"{key[2]}/s open loop"
    setup = "3 brokers RF3 misr2" if key[0] == "cluster" else "1 broker RF1"
    print(f"| {setup} | {key[1]} | {rate} | {key[3]} | {len(rs)} | {f('msgs_per_s', rs):.0f} | {f('mb_per_s', rs):.1f} "
          f"| {f('p50_ms', rs):.2f} | {f('p90_ms', rs):.2f} | {f('p99_ms', rs):.2f} | {f('p999_ms', rs):.2f} "
          f"| {f('broker_cpu_cores', rs):.2f} | {f('loadgen_cpu_cores', rs):.2f} "
          f"| {ratio('msgs_per_s')} | {ratio('p50_ms')} | {ratio('p99_ms')} |")
PY
cat "$OUT/summary.md"
