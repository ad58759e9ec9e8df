#!/usr/bin/env bash
# Prints what this machine is as JSON: CPU model and flags, cores, kernel,
# memory, the disk under DIR (model, rotational, io scheduler, filesystem),
# THP, CPU governor, virtualisation. Anything unreadable is null.
# Usage: bash tuning/machine.sh DIR
set -uo pipefail
DIR="${1:-.}"
mkdir -p "$DIR"
read_or_null() { if [ -r "$1" ]; then python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip()))' "$1"; else echo null; fi; }
js() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
dev=$(df --output=source "$DIR" | tail -1)
fstype=$(df --output=fstype "$DIR" | tail -1 | xargs)
base=$(basename "$dev")
# partition -> parent disk (vda1 -> vda, nvme0n1p1 -> nvme0n1)
disk="$base"
if [ -e "/sys/class/block/$base/partition" ]; then disk=$(basename "$(readlink -f "/sys/class/block/$base/..")"); fi
cat <<JSON
{
  "hostname": $(js "$(cat /proc/sys/kernel/hostname)"),
  "date_utc": $(js "$(date -u +%FT%TZ)"),
  "cpu_model": $(js "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"),
  "cpu_flags": $(js "$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2 | xargs)"),
  "cores_online": $(nproc),
  "kernel": $(js "$(uname -r)"),
  "mem_total_kib": $(awk '/MemTotal/{print $2}' /proc/meminfo),
  "virtualization": $(js "$(systemd-detect-virt 2>/dev/null || echo unknown)"),
  "data_dir": $(js "$DIR"),
  "data_device": $(js "$dev"),
  "data_fs": $(js "$fstype"),
  "disk": $(js "$disk"),
  "disk_model": $(read_or_null "/sys/block/$disk/device/model"),
  "disk_vendor": $(read_or_null "/sys/block/$disk/device/vendor"),
  "disk_rotational": $(read_or_null "/sys/block/$disk/queue/rotational"),
  "io_scheduler": $(read_or_null "/sys/block/$disk/queue/scheduler"),
  "thp_enabled": $(read_or_null /sys/kernel/mm/transparent_hugepage/enabled),
  "thp_defrag": $(read_or_null /sys/kernel/mm/transparent_hugepage/defrag),
  "cpu_governor": $(read_or_null /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor),
  "cpu_mhz_max": $(read_or_null /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq),
  "dirty_ratio": $(read_or_null /proc/sys/vm/dirty_ratio),
  "dirty_background_ratio": $(read_or_null /proc/sys/vm/dirty_background_ratio),
  "tcp_wmem": $(read_or_null /proc/sys/net/ipv4/tcp_wmem),
  "tcp_rmem": $(read_or_null /proc/sys/net/ipv4/tcp_rmem),
  "loadavg_at_start": $(read_or_null /proc/loadavg)
}
JSON
