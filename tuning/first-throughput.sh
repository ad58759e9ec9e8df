#!/usr/bin/env bash
# First produce and fetch throughput figures with a real client (Debian's
# kcat, librdkafka 2.0.2) against a release corelog on this machine.
# Usage: bash tuning/first-throughput.sh [RUNS] [MESSAGES]
# Writes a markdown report to stdout; the loadgen issue replaces this with
# open-loop runs and HDR histograms.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-5}"
MESSAGES="${2:-300000}"
SIZE=1024
PORT=19399
WORK="$(mktemp -d /tmp/corelog-tput.XXXXXX)"
trap '[ -n "${BROKER:-}" ] && kill "$BROKER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
python3 - "$MESSAGES" "$SIZE" > "$WORK/msgs.txt" <<'PY'
import random, string, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(42)
alphabet = string.ascii_letters + string.digits
block = ''.join(rnd.choice(alphabet) for _ in range(size * 64))
for i in range(n):
    off = (i * 97) % (len(block) - size)
    print(block[off:off + size - 1])   # + newline = SIZE bytes per message
PY
BYTES=$(stat -c %s "$WORK/msgs.txt")

"$ROOT/target/release/corelog" serve --listen 127.0.0.1:$PORT --data-dir "$WORK/data" \
    --set num.partitions=3 2> "$WORK/broker.log" &
BROKER=$!
for _ in $(seq 50); do kcat -b 127.0.0.1:$PORT -L >/dev/null 2>&1 && break; sleep 0.1; done

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A RESULTS
for acks in 1 all; do
  for run in $(seq "$RUNS"); do
    topic="t-$acks-$run"
    kcat -b 127.0.0.1:$PORT -L -t "$topic" >/dev/null 2>&1   # auto-create
    t0=$(now)
    kcat -b 127.0.0.1:$PORT -P -t "$topic" -X acks=$acks -X linger.ms=5 -X batch.size=65536 \
        -X queue.buffering.max.kbytes=1048576 -l "$WORK/msgs.txt"
    t1=$(now)
    RESULTS[produce-$acks]+="$(echo "$BYTES / ($t1 - $t0) / 1000000" | bc -l) "
    t0=$(now)
    kcat -b 127.0.0.1:$PORT -C -t "$topic" -o beginning -e -q -X fetch.message.max.bytes=1048576 > /dev/null
    t1=$(now)
    RESULTS[fetch-$acks]+="$(echo "$BYTES / ($t1 - $t0) / 1000000" | bc -l) "
  done
done

echo "# First throughput figures: kcat against corelog"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "- corelog: $(git -C "$ROOT" rev-parse --short HEAD), --cores $(nproc), defaults (acks=all fsyncs before ack)"
echo "- client: $(kcat -V 2>&1 | head -1)"
echo "- workload: $MESSAGES messages of $SIZE bytes ($BYTES bytes) per run, 3 partitions, linger.ms=5, batch.size=65536, no compression"
echo "- command: bash tuning/first-throughput.sh $RUNS $MESSAGES"
echo
echo "| measurement | median MB/s | runs (MB/s) |"
echo "|---|---|---|"
for key in produce-1 fetch-1 produce-all fetch-all; do
  vals="${RESULTS[$key]}"
  med=$(printf '%s\n' $vals | median)
  printf '| %s | %.1f | %s |\n' "$key" "$med" "$(printf '%.0f ' $vals)"
done
echo
echo "sendfile vs copied bytes at shutdown:"
kill -TERM $BROKER; wait $BROKER || true; BROKER=
grep -o "sendfile_bytes=[0-9]* copied_bytes=[0-9]*" "$WORK/broker.log" | sed "s/^/- /" || true
