#!/bin/sh
# validate_basics.sh: example validation script run by glidein_startup.sh before the startd.
#
# Called as `validate_basics.sh GLIDEIN_CONFIG`; appends KEY=VALUE lines to that file and exits
# non-zero (with a last line saying why) when this node must not run jobs. Factories add their
# own validate_* scripts to the web area; they run in name order. POSIX sh.
set -u
config=$1
work=$(sed -n 's/^GLIDEIN_WORK_DIR=//p' "$config" | tail -n 1)
min_disk_kb=$(sed -n 's/^GLIDEIN_MIN_DISK_KB=//p' "$config" | tail -n 1)
min_disk_kb=${min_disk_kb:-1048576}

cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
memory_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo 2>/dev/null)
disk_kb=$(df -Pk "${work:-.}" | awk 'NR == 2 { print $4 }')

echo "GLIDEIN_CPUS=$cpus" >>"$config"
echo "GLIDEIN_MEMORY_MB=$(( ${memory_kb:-0} / 1024 ))" >>"$config"
echo "GLIDEIN_DISK_KB=${disk_kb:-0}" >>"$config"
echo "cpus=$cpus memory_kb=${memory_kb:-?} free_disk_kb=${disk_kb:-?}"

if [ "${disk_kb:-0}" -lt "$min_disk_kb" ]; then
    echo "only ${disk_kb:-0} KB free in ${work:-.}, need $min_disk_kb (GLIDEIN_MIN_DISK_KB)"
    exit 1
fi
echo "GLIDEIN_VALIDATED=True" >>"$config"
