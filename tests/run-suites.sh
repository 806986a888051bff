#!/usr/bin/env bash
# Run the test suites side by side, because the two long ones partly wait (on podman exec,
# on an emulated VM) and one after the other they take about 29 min from nothing on 2 cores.
# Side by side: about 19 min, each suite 2-3 times slower than alone (bench/RESULTS.md).
#
#                                                                        alone, idle machine
#   suite     pytest: unit, integration and e2e tests (all but the two below)    ~7 min
#   molecule  every role's Molecule scenario (tests/molecule/run-all.sh), then
#             site.yml in a container (pytest -m molecule)                       ~8 min
#   image     the qemu image built by Packer under TCG with playbooks/image.yml,
#             then booted twice (pytest -m image_build)          ~8 min, +5 the first time
#
# molecule and image start first, in the background, each logging to build/suites/<name>.log;
# suite streams to the terminal. Then the background logs are printed whole and a table of
# results closes the run. Exit status 0 only if every suite passed. Ctrl-C or SIGTERM stops
# them all: pytest gets SIGINT (its fixtures stop Packer and qemu, remove containers) and
# run-all.sh destroys the Molecule instances it started; checked by hand on 2026-11-22.
#
#   tests/run-suites.sh                  # all three
#   tests/run-suites.sh suite molecule   # some
#   PYTEST_ARGS='-x' tests/run-suites.sh # extra pytest arguments for every pytest run
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${VENV:-$repo/.venv}"
venv=$(cd "$repo" && cd "$venv" 2>/dev/null && pwd) || { echo "run-suites: no virtualenv at ${VENV:-$repo/.venv}; run make venv" >&2; exit 2; }
python="$venv/bin/python"
logs="$repo/build/suites"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"

suites=("$@")
[ "${#suites[@]}" -gt 0 ] || suites=(molecule image suite)
for name in "${suites[@]}"; do
  case "$name" in
    suite | molecule | image) ;;
    *) echo "run-suites: unknown suite '$name'; give any of: suite molecule image" >&2; exit 2 ;;
  esac
done
[ -x "$python" ] || { echo "run-suites: $python is missing; run make venv" >&2; exit 2; }
mkdir -p "$logs"
cd "$repo" || exit 2

# One suite; it also leaves "<exit status> <seconds>" in $logs/<name>.status.
run_suite() {
  local began=$SECONDS rc
  run_suite_commands "$1"
  rc=$?
  echo "$rc $((SECONDS - began))" >"$logs/$1.status"
  return "$rc"
}

# `env --default-signal=INT`: a shell started in the background (a CI runner, `&`) passes
# SIGINT on as ignored, and then neither pytest (fixture teardown: containers, VMs) nor
# run-all.sh (molecule destroy) could react to the SIGINT that stops them below.
run_suite_commands() {
  case "$1" in
    suite) env --default-signal=INT "$python" -m pytest "${pytest_args[@]}" ;;
    molecule)
      tests/molecule/setup-host.sh &&
        VENV="$venv" env --default-signal=INT tests/molecule/run-all.sh &&
        env --default-signal=INT "$python" -m pytest -m molecule "${pytest_args[@]}"
      ;;
    # -rP: the passed tests' output too, where the build and boot times are printed.
    image) env --default-signal=INT "$python" -m pytest -m image_build -rP "${pytest_args[@]}" ;;
  esac
}

# Each background suite in a process group of its own (set -m), so that it can be stopped whole.
set -m
declare -A pid took status
background=()
for name in "${suites[@]}"; do
  [ "$name" = suite ] && continue
  rm -f "$logs/$name.status"
  run_suite "$name" >"$logs/$name.log" 2>&1 </dev/null &
  pid[$name]=$!
  background+=("$name")
  echo "run-suites: $name started in the background (log: build/suites/$name.log)"
done
set +m

stop_background() {
  trap - INT TERM
  echo "run-suites: interrupted; stopping ${background[*]:-nothing}" >&2
  local name
  for name in "${background[@]}"; do kill -INT -- "-${pid[$name]}" 2>/dev/null; done
  # Give pytest's teardown and molecule destroy time; then stop what is left.
  for _ in $(seq 120); do
    local alive=0
    for name in "${background[@]}"; do kill -0 "${pid[$name]}" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 1
  done
  for name in "${background[@]}"; do kill -TERM -- "-${pid[$name]}" 2>/dev/null; done
  exit 130
}
trap stop_background INT TERM

for name in "${suites[@]}"; do
  [ "$name" = suite ] || continue
  run_suite suite
  status[suite]=$?
  read -r _ "took[suite]" <"$logs/suite.status" || took[suite]='?'
done

# Wait for the background suites, saying every minute which are still running.
remaining=("${background[@]}")
while [ "${#remaining[@]}" -gt 0 ]; do
  still=()
  for name in "${remaining[@]}"; do
    if kill -0 "${pid[$name]}" 2>/dev/null; then
      still+=("$name")
    else
      wait "${pid[$name]}"
      status[$name]=$?
      read -r _ "took[$name]" <"$logs/$name.status" || took[$name]='?'
    fi
  done
  remaining=("${still[@]}")
  if [ "${#remaining[@]}" -gt 0 ]; then
    [ $((SECONDS % 60)) -lt 5 ] && echo "run-suites: waiting for ${remaining[*]} (${SECONDS}s)"
    sleep 5
  fi
done

for name in "${background[@]}"; do
  echo
  echo "================ run-suites: $name (build/suites/$name.log) ================"
  cat "$logs/$name.log"
done

echo
echo "run-suites: results (${SECONDS}s in all)"
failed=0
for name in "${suites[@]}"; do
  if [ "${status[$name]}" -eq 0 ]; then word=passed; else word="FAILED (exit ${status[$name]})"; failed=1; fi
  printf '  %-9s %-18s %5ss\n' "$name" "$word" "${took[$name]}"
done
exit "$failed"
