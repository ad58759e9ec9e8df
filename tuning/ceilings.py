#!/usr/bin/env python3
"""Summarises the raw ceiling measurements in DIR (fio, iperf3 and loadgen
JSON files written by run-study.sh) into one JSON object on stdout.
Missing or unreadable measurements are null."""
import json
import os
import sys

d = sys.argv[1]


def load(name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fio_job(name):
    j = load(name)
    try:
        return j["jobs"][0]
    except (TypeError, KeyError, IndexError):
        return None


out = {}
j = fio_job("fio-1m-fdatasync.json")
out["fio_1m_fdatasync_gb_s"] = j["write"]["bw_bytes"] / 1e9 if j else None
j = fio_job("fio-4k-fdatasync.json")
if j:
    out["fio_4k_fdatasync_p99_ms"] = j["sync"]["lat_ns"]["percentile"]["99.000000"] / 1e6
    out["fio_4k_fdatasync_p50_ms"] = j["sync"]["lat_ns"]["percentile"]["50.000000"] / 1e6
    out["fio_4k_write_p99_ms"] = j["write"]["clat_ns"]["percentile"]["99.000000"] / 1e6
    out["fio_4k_iops"] = j["write"]["iops"]
else:
    out["fio_4k_fdatasync_p99_ms"] = None
j = fio_job("fio-pagecache.json")
out["pagecache_write_gb_s"] = j["write"]["bw_bytes"] / 1e9 if j else None
for key, name in [("iperf3_1stream_gb_s", "iperf3.json"), ("iperf3_sendfile_gb_s", "iperf3-sendfile.json")]:
    j = load(name)
    try:
        out[key] = j["end"]["sum_received"]["bits_per_second"] / 8e9
    except (TypeError, KeyError):
        out[key] = None
j = load("rtt.json") or {}
out["rtt_p50_us"] = j.get("rtt_p50_us")
out["rtt_p99_us"] = j.get("rtt_p99_us")
j = load("sendfile.json") or {}
out["loadgen_sendfile_gb_s"] = j.get("sendfile_gb_per_s")
j = load("loadgen-vs-sink.json")
try:
    out["loadgen_own_ceiling_mb_s"] = j["produce"]["mb_per_s"]
    out["loadgen_own_ceiling_cpu_cores"] = j["loadgen_cpu_cores"]
except (TypeError, KeyError):
    out["loadgen_own_ceiling_mb_s"] = None
print(json.dumps(out, indent=2))
