#!/usr/bin/env python3
"""Writes report.md for a study directory made by run-study.sh: the machine,
its ceilings, and per broker profile the issue's targets as fractions of the
ceilings measured in the same sitting, the sweep tables, and where the time
goes (perf). A hand-written findings.md in the directory is included."""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, unit="", digits=1):
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}{unit}"


machine = load(os.path.join(out, "machine.json")) or {}
ceil = load(os.path.join(out, "ceilings.json")) or {}
lines = []
w = lines.append
w(f"# corelog tuning study: {os.path.basename(os.path.normpath(out))}")
w("")
w("Written by `tuning/run-study.sh` (raw data beside this file). Every broker figure is stated as a fraction of a "
  "ceiling measured in the same sitting. Throughput is loadgen's payload MB/s (key+value bytes, 1 MB = 10^6 B), "
  "the median over repeats; latency percentiles come from HDR histograms merged over repeats; open-loop latency "
  "counts from each message's intended send time.")
w("")
w("## Machine")
w("")
w("| what | value |")
w("|---|---|")
for k in ["hostname", "date_utc", "cpu_model", "cores_online", "kernel", "mem_total_kib", "virtualization",
          "data_device", "data_fs", "disk_vendor", "disk_model", "disk_rotational", "io_scheduler", "thp_enabled",
          "cpu_governor", "dirty_ratio", "dirty_background_ratio", "tcp_wmem", "loadavg_at_start"]:
    w(f"| {k} | {machine.get(k)} |")
flags = machine.get("cpu_flags") or ""
interesting = [f for f in ["sse4_2", "avx2", "avx512f", "aes", "pclmulqdq", "sha_ni", "vaes", "erms", "fsrm"] if f in flags.split()]
w(f"| cpu flags (selected) | {' '.join(interesting)} |")
w("")
w("## Ceilings measured in this sitting")
w("")
w("| ceiling | value | tool |")
w("|---|---|---|")
rows = [
    ("iperf3 loopback, 1 stream", fmt(ceil.get("iperf3_1stream_gb_s"), " GB/s", 2), "iperf3 -t 5"),
    ("iperf3 loopback, 1 stream, sendfile", fmt(ceil.get("iperf3_sendfile_gb_s"), " GB/s", 2), "iperf3 -Z -t 5"),
    ("sendfile page cache -> loopback socket", fmt(ceil.get("loadgen_sendfile_gb_s"), " GB/s", 2), "loadgen ceiling sendfile"),
    ("page-cache writes", fmt(ceil.get("pagecache_write_gb_s"), " GB/s", 2), "fio 1 MiB buffered, 2 GiB"),
    ("1 MiB writes + fdatasync each", fmt(ceil.get("fio_1m_fdatasync_gb_s"), " GB/s", 3), "fio --fdatasync=1 bs=1M"),
    ("4 KiB append + fdatasync, p99 of the fdatasync", fmt(ceil.get("fio_4k_fdatasync_p99_ms"), " ms", 2), "fio --fdatasync=1 bs=4k"),
    ("4 KiB append + fdatasync, p50 of the fdatasync", fmt(ceil.get("fio_4k_fdatasync_p50_ms"), " ms", 2), "fio --fdatasync=1 bs=4k"),
    ("TCP loopback round trip p50", fmt(ceil.get("rtt_p50_us"), " us", 1), "loadgen ceiling rtt"),
    ("TCP loopback round trip p99", fmt(ceil.get("rtt_p99_us"), " us", 1), "loadgen ceiling rtt"),
    ("loadgen's own produce ceiling (vs a sink)", fmt(ceil.get("loadgen_own_ceiling_mb_s"), " MB/s", 0)
     + f" at {fmt(ceil.get('loadgen_own_ceiling_cpu_cores'), ' cores', 2)}", "loadgen produce --rate max vs loadgen sink"),
]
for r in rows:
    w(f"| {r[0]} | {r[1]} | {r[2]} |")
w("")


def cell(res, acks, rate):
    if not res:
        return None
    for c in res["cells"]:
        if c["params"]["acks"] == acks and c["key"].split("rate=")[1].split(" ")[0] == rate:
            return c
    return None


def frac(v, ceiling):
    if v is None or not ceiling:
        return "n/a"
    return f"{100 * v / ceiling:.1f}%"


profiles = open(os.path.join(out, "profiles.txt")).read().splitlines() if os.path.exists(os.path.join(out, "profiles.txt")) else []
for line in profiles:
    if not line.strip() or line.startswith("#"):
        continue
    name, flags, steps = (line.split("|") + ["", ""])[:3]
    p = os.path.join(out, name)
    w(f"## Profile `{name}`: `corelog serve {flags}`")
    w("")
    mx = load(os.path.join(p, "max", "results.json"))
    lat = load(os.path.join(p, "latency", "results.json"))
    catch = [load(f) for f in sorted(glob.glob(os.path.join(p, "catchup-*.json")))]
    catch = [c for c in catch if c and c.get("consume")]
    iperf = (ceil.get("iperf3_1stream_gb_s") or 0) * 1000
    fsync_bw = (ceil.get("fio_1m_fdatasync_gb_s") or 0) * 1000
    sendfile = (ceil.get("iperf3_sendfile_gb_s") or ceil.get("loadgen_sendfile_gb_s") or 0) * 1000
    rtt99 = (ceil.get("rtt_p99_us") or 0) / 1000
    fsync99 = ceil.get("fio_4k_fdatasync_p99_ms") or 0
    w("Reference workload: 1 KiB messages, linger 5 ms, 64 KiB batches, 3 partitions, loadgen and the broker on the same host.")
    w("")
    w("| target (issue 4) | measured | ceiling | fraction of ceiling | target | met |")
    w("|---|---|---|---|---|---|")
    a1 = cell(mx, "1", "max")
    if a1:
        v = a1["mb_per_s"]
        w(f"| produce acks=1, closed loop | {v:.0f} MB/s (runs {', '.join(f'{x/1000:.0f}k' for x in a1['runs_msgs_per_s'])} msgs/s) | iperf3 1 stream {iperf:.0f} MB/s | {frac(v, iperf)} | >= 25% | {'yes' if iperf and v >= 0.25 * iperf else 'no'} |")
    aa = cell(mx, "all", "max")
    if aa:
        v = aa["mb_per_s"]
        w(f"| produce acks=all, closed loop | {v:.0f} MB/s (runs {', '.join(f'{x/1000:.0f}k' for x in aa['runs_msgs_per_s'])} msgs/s) | 1 MiB+fdatasync {fsync_bw:.0f} MB/s | {frac(v, fsync_bw)} | >= 60% | {'yes' if fsync_bw and v >= 0.6 * fsync_bw else 'no'} |")
    if catch:
        rates = [c["consume"]["mb_per_s"] for c in catch]
        v = statistics.median(rates)
        w(f"| consumer catch-up from earliest | {v:.0f} MB/s (runs {', '.join(f'{x:.0f}' for x in rates)}) | sendfile {sendfile:.0f} MB/s | {frac(v, sendfile)} | >= 50% | {'yes' if sendfile and v >= 0.5 * sendfile else 'no'} |")
    for acks, limit, label in [("1", 10 * rtt99, "10 x RTT p99"), ("all", 10 * rtt99 + fsync99, "10 x RTT p99 + fsync p99")]:
        c = cell(lat, acks, "25%")
        if c:
            v = c["produce_latency"]["p99_ms"]
            w(f"| p99 produce latency at 25% of max, acks={acks}, open loop ({c['params']['rate']} msgs/s) | {v:.2f} ms | {label} = {limit:.2f} ms | {v / limit:.1f}x the bound | <= 1x | {'yes' if limit and v <= limit else 'no'} |")
            fl = load(os.path.join(p, "latency", f"floor-acks{acks}.json"))
            if fl and fl.get("produce"):
                fv = fl["produce"]["latency"]["p99_ms"]
                w(f"| (same rate, acks={acks}, against `loadgen sink`: loadgen + host floor) | {fv:.2f} ms | | | | |")
    w("")
    for sub, title in [("max", "max-throughput.toml"), ("latency", "latency-at-rate.toml (rates max, 25%)"), ("alb", "acks-linger-batch.toml (1 repeat per cell)")]:
        res = load(os.path.join(p, sub, "results.json"))
        if not res:
            continue
        w(f"### {title}")
        w("")
        w("| acks | linger ms | batch | rate | mode | msgs/s | MB/s | p50 | p99 | p99.9 | max | e2e p99 | errors | loadgen cpu | broker cpu |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in res["cells"]:
            l = c["produce_latency"]
            e = c.get("e2e_latency") or {}
            w(f"| {c['params']['acks']} | {c['params']['linger_ms']} | {c['params']['batch_bytes'] // 1024} KiB | {c['params']['rate']} | {c['mode']} | "
              f"{c['msgs_per_s']:.0f} | {c['mb_per_s']:.1f} | {l['p50_ms']:.2f} | {l['p99_ms']:.2f} | {l['p999_ms']:.2f} | {l['max_ms']:.2f} | "
              f"{fmt(e.get('p99_ms'), '', 2)} | {sum(c['errors'].values())} | {c['loadgen_cpu_cores']:.2f} | {fmt(c.get('broker_cpu_cores'), '', 2)} |")
        w("")
        w(f"Report with charts: `{name}/{sub}/report.html`.")
        w("")
    if catch:
        w("### consumer catch-up")
        w("")
        w("| run | msgs | seconds | MB/s | loadgen cpu | broker cpu |")
        w("|---|---|---|---|---|---|")
        for i, c in enumerate(catch, 1):
            s = c["consume"]
            w(f"| {i} | {s['msgs']} | {s['seconds']:.2f} | {s['mb_per_s']:.0f} | {c['loadgen_cpu_cores']:.2f} | {fmt(c.get('broker_cpu_cores'), '', 2)} |")
        w("")
    failures = os.path.join(p, "failures.md")
    if os.path.exists(failures):
        w("### Failures during this profile")
        w("")
        w(open(failures).read())
        w("")
    perfs = sorted(glob.glob(os.path.join(p, "perf-*.txt")))
    perfs = [f for f in perfs if not f.endswith((".run.txt", "-children.txt", "-callgraph.txt"))]
    if perfs:
        w("### Where the broker's time goes (perf record -g, cpu-clock, top symbols by self time; inclusive and call-graph views in the -children and -callgraph files)")
        w("")
        for f in perfs:
            top = [re.sub(r"[\s-]+$", "", l) for l in open(f).read().splitlines()
                   if l.strip() and not l.startswith("#") and "%" in l][:18]
            w(f"`{os.path.basename(f)}`:")
            w("")
            w("```")
            w("\n".join(top))
            w("```")
            w("")
findings = os.path.join(out, "findings.md")
if os.path.exists(findings):
    w(open(findings).read())
print("\n".join(lines))
