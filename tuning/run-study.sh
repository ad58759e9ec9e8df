#!/usr/bin/env bash
# A hardware tuning study: record the machine, measure its ceilings, run
# loadgen scenarios against corelog under each broker profile, and write
# tuning/results/<date>-<host>/ with the raw data and report.md, where every
# broker figure is a fraction of a ceiling measured in the same sitting.
#
# Usage: bash tuning/run-study.sh            (the short study, ~10 minutes)
# Environment:
#   STUDY_OUT=DIR            where results go (default tuning/results/<date>-<host>)
#   STUDY_DATA=DIR           broker data and fio files (default target/study-data; same disk as the broker would use)
#   STUDY_PROFILES=FILE      broker profiles, one per line: name|corelog serve flags|steps
#                            steps: max (max-throughput.toml), latency (25% of max), alb
#                            (acks-linger-batch.toml), catchup (consumer catch-up), perf
#   STUDY_REPEATS=N          repeats per cell (default 3; medians are reported)
#   STUDY_TIME_SCALE=X       scales every cell's warm-up and duration (default 1)
#   STUDY_SKIP_CEILINGS=1    reuse ceilings.json already in STUDY_OUT
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
HOST="$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
OUT="${STUDY_OUT:-$ROOT/tuning/results/$(date -u +%F)-$HOST}"
DATA="${STUDY_DATA:-$ROOT/target/study-data}"
REPEATS="${STUDY_REPEATS:-3}"
SCALE="${STUDY_TIME_SCALE:-1}"
PORT=19450
LOADGEN="$ROOT/target/release/loadgen"
CORELOG="$ROOT/target/release/corelog"
mkdir -p "$OUT" "$DATA"
log() { printf '[study %s] %s\n' "$(date +%T)" "$*" >&2; }

BROKER=""
cleanup() {
  if [ -n "$BROKER" ]; then kill -TERM "$BROKER" 2>/dev/null || true; wait "$BROKER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

log "building corelog and loadgen (release)"
cargo build --release --quiet -p corelog -p loadgen

# ------------------------------------------------------------------ machine
if [ "${STUDY_SKIP_CEILINGS:-0}" = 1 ] && [ -f "$OUT/machine.json" ]; then
  log "reusing $OUT/machine.json"
else
  log "recording the machine"
  bash "$ROOT/tuning/machine.sh" "$DATA" > "$OUT/machine.json"
fi

# ------------------------------------------------------------------ ceilings
ensure_tools() {
  local missing=()
  for t in fio iperf3; do command -v "$t" >/dev/null || missing+=("$t"); done
  command -v perf >/dev/null || missing+=(linux-perf)
  if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" </dev/null >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q "${missing[@]}" </dev/null >/dev/null 2>&1; } || true
  fi
}

ceilings() {
  ensure_tools
  local c="$OUT/ceilings"
  mkdir -p "$c"
  if command -v fio >/dev/null; then
    log "fio: page-cache writes (buffered, no sync)"
    fio --name=pagecache --filename="$DATA/fio.dat" --rw=write --bs=1M --size=2G \
        --ioengine=psync --output-format=json > "$c/fio-pagecache.json" 2>/dev/null || true
    rm -f "$DATA/fio.dat"
    log "fio: 1 MiB writes, fdatasync after each"
    fio --name=seq1m-fdatasync --filename="$DATA/fio.dat" --rw=write --bs=1M --size=1G \
        --fdatasync=1 --ioengine=sync --runtime=10 --output-format=json > "$c/fio-1m-fdatasync.json" 2>/dev/null || true
    rm -f "$DATA/fio.dat"
    log "fio: 4 KiB append + fdatasync latency"
    fio --name=append4k-fdatasync --filename="$DATA/fio.dat" --rw=write --bs=4k --size=64M \
        --fdatasync=1 --ioengine=sync --runtime=5 --time_based --output-format=json > "$c/fio-4k-fdatasync.json" 2>/dev/null || true
    rm -f "$DATA/fio.dat"
  fi
  if command -v iperf3 >/dev/null; then
    log "iperf3: loopback, 1 stream, with and without sendfile (-Z)"
    iperf3 -s -p 5299 -D --pidfile "$DATA/iperf3.pid" >/dev/null 2>&1; sleep 0.5
    iperf3 -c 127.0.0.1 -p 5299 -t 5 -J > "$c/iperf3.json" 2>/dev/null || true
    iperf3 -c 127.0.0.1 -p 5299 -t 5 -Z -J > "$c/iperf3-sendfile.json" 2>/dev/null || true
    kill "$(cat "$DATA/iperf3.pid")" 2>/dev/null || true
  fi
  log "loadgen: loopback TCP round trip, sendfile to a socket"
  "$LOADGEN" ceiling rtt --seconds 3 > "$c/rtt.json"
  "$LOADGEN" ceiling sendfile --seconds 3 > "$c/sendfile.json"
  log "loadgen's own ceiling: closed loop against loadgen sink (acks nothing, stores nothing)"
  "$LOADGEN" sink --listen 127.0.0.1:$((PORT + 1)) --partitions 3 2>/dev/null &
  local sink=$!
  sleep 0.5
  "$LOADGEN" produce --brokers 127.0.0.1:$((PORT + 1)) --topic sink --rate max --acks 1 \
      --linger-ms 5 --batch-bytes 64k --duration 3 --warmup 1 --quiet --broker-pid "$sink" \
      --json-out "$c/loadgen-vs-sink.json" > /dev/null
  kill "$sink" 2>/dev/null || true; wait "$sink" 2>/dev/null || true
  python3 "$ROOT/tuning/ceilings.py" "$c" > "$OUT/ceilings.json"
}

if [ "${STUDY_SKIP_CEILINGS:-0}" = 1 ] && [ -f "$OUT/ceilings.json" ]; then
  log "reusing $OUT/ceilings.json"
else
  ceilings
fi

# ------------------------------------------------------------------ profiles
start_broker() { # name, flags
  rm -rf "$DATA/broker"
  # shellcheck disable=SC2086
  "$CORELOG" serve --listen 127.0.0.1:$PORT --data-dir "$DATA/broker" $2 \
      --set log.retention.check.interval.ms=5000 2> "$OUT/$1/broker.log" &
  BROKER=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return 0
    sleep 0.1
  done
  log "corelog did not start"; exit 1
}

stop_broker() {
  kill -TERM "$BROKER" 2>/dev/null || true
  wait "$BROKER" 2>/dev/null || true
  BROKER=""
}

sweep() { # profile, scenario, out name, repeats, extra args...
  local p="$1" s="$2" n="$3" r="$4"; shift 4
  log "$p: sweep $s $*"
  "$LOADGEN" sweep "$ROOT/tuning/scenarios/$s.toml" --brokers 127.0.0.1:$PORT --out "$OUT/$p/$n" \
      --broker-pid "$BROKER" --repeats "$r" --time-scale "$SCALE" --quiet "$@" \
      > "$OUT/$p/$n.txt"
}

catchup() { # profile: produce a backlog, then time consumers reading it from earliest
  local p="$1"
  for i in $(seq "$REPEATS"); do
    log "$p: consumer catch-up $i/$REPEATS"
    "$LOADGEN" produce --brokers 127.0.0.1:$PORT --topic "catchup-$i" --create-partitions 3 --acks 1 \
        --rate max --linger-ms 5 --batch-bytes 64k --messages 2000000 --warmup 0 --quiet > /dev/null
    "$LOADGEN" consume --brokers 127.0.0.1:$PORT --topic "catchup-$i" --from earliest --catch-up \
        --partition-max-bytes 4m --warmup 0 --quiet --broker-pid "$BROKER" \
        --json-out "$OUT/$p/catchup-$i.json" > "$OUT/$p/catchup-$i.txt"
  done
}

floor() { # profile: loadgen + host latency floor at each open-loop rate of the latency sweep, against loadgen sink
  local p="$1" res="$OUT/$1/latency/results.json"
  [ -f "$res" ] || { log "$p: no latency sweep, no floor"; return 0; }
  "$LOADGEN" sink --listen 127.0.0.1:$((PORT + 2)) --partitions 3 2>/dev/null &
  local sink=$!
  sleep 0.3
  python3 - "$res" <<'PY' | while read -r acks rate; do
import json, sys
for c in json.load(open(sys.argv[1]))["cells"]:
    if c["mode"] == "open-loop":
        print(c["params"]["acks"], c["params"]["rate"].split()[0])
PY
    log "$p: floor: loadgen vs sink, acks=$acks at $rate msgs/s"
    "$LOADGEN" produce --brokers 127.0.0.1:$((PORT + 2)) --topic floor --acks "$acks" --rate "$rate" \
        --linger-ms 5 --batch-bytes 64k --duration 5 --warmup 1 --quiet \
        --json-out "$OUT/$p/latency/floor-acks$acks.json" > /dev/null || true
  done
  kill "$sink" 2>/dev/null || true; wait "$sink" 2>/dev/null || true
}

perf_text() { # name: flat self-time profile, inclusive (children) profile, call graph
  local f="$OUT/$p/$1"
  perf report -i "$DATA/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0.5 --stdio 2>/dev/null \
      | grep -v '^$' | sed -E 's/ +$//' > "$f.txt" || true
  perf report -i "$DATA/perf.data" --children --sort symbol -g none --percent-limit 3 --stdio 2>/dev/null \
      | grep -v '^$' | sed -E 's/ +$//' > "$f-children.txt" || true
  perf report -i "$DATA/perf.data" --no-children --sort symbol -g caller,0.5,callee,function,percent --percent-limit 2 --stdio 2>/dev/null \
      | grep -v '^$' | sed -E 's/ +$//' | head -400 > "$f-callgraph.txt" || true
}

perf_profile() { # profile: sample the broker during a max produce acks=1, acks=all and a catch-up
  local p="$1"
  command -v perf >/dev/null || { log "no perf: skipping profiles"; return 0; }
  for acks in 1 all; do
    log "$p: perf record -g of the broker, produce acks=$acks"
    "$LOADGEN" produce --brokers 127.0.0.1:$PORT --topic "perf-$acks" --create-partitions 3 --acks "$acks" \
        --rate max --producers 2 --linger-ms 5 --batch-bytes 64k --duration 5 --warmup 1 --quiet > "$OUT/$p/perf-produce-$acks.run.txt" &
    local lg=$!
    sleep 1.5
    perf record -e cpu-clock -F 999 -g -p "$BROKER" -o "$DATA/perf.data" -- sleep 4 >/dev/null 2>&1 || true
    wait "$lg" || true
    perf_text "perf-produce-$acks"
  done
  log "$p: perf record -g of the broker, consumer catch-up"
  "$LOADGEN" produce --brokers 127.0.0.1:$PORT --topic perf-cu --create-partitions 3 --acks 1 --rate max \
      --messages 3000000 --warmup 0 --quiet > /dev/null
  "$LOADGEN" consume --brokers 127.0.0.1:$PORT --topic perf-cu --from earliest --catch-up --partition-max-bytes 4m \
      --warmup 0 --quiet > "$OUT/$p/perf-catchup.run.txt" &
  local lg=$!
  sleep 0.3
  perf record -e cpu-clock -F 999 -g -p "$BROKER" -o "$DATA/perf.data" -- sleep 2 >/dev/null 2>&1 || true
  wait "$lg" || true
  perf_text perf-catchup
  rm -f "$DATA/perf.data"
}

PROFILES_FILE="${STUDY_PROFILES:-}"
if [ -z "$PROFILES_FILE" ]; then
  PROFILES_FILE="$DATA/profiles.txt"
  cat > "$PROFILES_FILE" <<'EOF'
default|--cores 2|max latency floor catchup alb perf
no-fsync-on-ack|--cores 2 --set log.flush.on.ack.all=false|max latency floor
segment-128m|--cores 2 --set log.segment.bytes=134217728|max
EOF
fi
cp "$PROFILES_FILE" "$OUT/profiles.txt"

while IFS='|' read -r name flags steps; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  mkdir -p "$OUT/$name"
  log "profile $name: corelog serve $flags"
  start_broker "$name" "$flags"
  for step in $steps; do
    rc=0
    case "$step" in
      max) sweep "$name" max-throughput max "$REPEATS" || rc=$? ;;
      latency) sweep "$name" latency-at-rate latency "$REPEATS" --rates max,25% || rc=$? ;;
      alb) sweep "$name" acks-linger-batch alb 1 || rc=$? ;;
      catchup) catchup "$name" || rc=$? ;;
      perf) perf_profile "$name" || rc=$? ;;
      floor) floor "$name" || rc=$? ;;
      *) log "unknown step $step" ;;
    esac
    if [ "$rc" != 0 ]; then
      # A failed step is a finding, not the end of the study: note it, keep
      # the broker's last words, restart the broker if it died, go on.
      log "$name: step $step FAILED (exit $rc)"
      {
        echo "- step \`$step\` failed (exit $rc) at $(date -u +%T)"
        if ! kill -0 "$BROKER" 2>/dev/null; then
          st=0; wait "$BROKER" || st=$?
          echo "  - the broker had exited with status $st; last lines of its log:"
          tail -5 "$OUT/$name/broker.log" | sed 's/^/        /'
        fi
      } >> "$OUT/$name/failures.md"
      if ! kill -0 "$BROKER" 2>/dev/null; then
        cp "$OUT/$name/broker.log" "$OUT/$name/broker-crash-$step.log"
        BROKER=""
        start_broker "$name" "$flags"
      fi
    fi
  done
  stop_broker
done < "$PROFILES_FILE"

log "writing $OUT/report.md"
python3 "$ROOT/tuning/report.py" "$OUT" > "$OUT/report.md"
log "done: $OUT"
