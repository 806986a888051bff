#!/usr/bin/env bash
# Run `molecule test` (destroy, create, converge, idempotence, verify, destroy) for each
# role given, or for every role under roles/ with a molecule/default scenario; fail if any
# fails. Builds the base image first when it is missing or stale. Logs: build/molecule/.
# Scenarios run GWMS_MOLECULE_JOBS at a time (default 2): each container has its own name
# and most of a scenario's time is spent waiting on `podman exec`, not on the CPU.
#
#   tests/molecule/run-all.sh                        # every role
#   tests/molecule/run-all.sh cvmfs htcondor         # some roles
#   GWMS_MOLECULE_JOBS=1 tests/molecule/run-all.sh   # one after the other
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="${VENV:-$repo/.venv}"
# Absolute: each scenario runs from its role directory (make passes VENV=.venv).
venv=$(cd "$repo" && cd "$venv" 2>/dev/null && pwd) || { echo "run-all: no virtualenv at ${VENV:-$repo/.venv}; run make venv" >&2; exit 2; }
export PATH="$venv/bin:$PATH"
export NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
logs="$repo/build/molecule"

for tool in molecule ansible-playbook podman; do
  command -v "$tool" >/dev/null || {
    echo "run-all: $tool is missing; run tests/molecule/setup-host.sh and pip install -r requirements-ansible.txt into $venv" >&2
    exit 2
  }
done
"$repo/tests/molecule/make-base-image.sh" || exit 2

roles=("$@")
if [ "${#roles[@]}" -eq 0 ]; then
  # The scenarios that install the gwms wheel take longest: start them first, so that
  # the short ones fill the gaps when scenarios run side by side.
  slow=() quick=()
  for scenario in "$repo"/roles/*/molecule/default/molecule.yml; do
    [ -e "$scenario" ] || continue
    role=$(basename "$(dirname "$(dirname "$(dirname "$scenario")")")")
    if grep -q GWMS_MOLECULE_WHEEL "$scenario"; then slow+=("$role"); else quick+=("$role"); fi
  done
  roles=("${slow[@]}" "${quick[@]}")
fi
if [ "${#roles[@]}" -eq 0 ]; then
  echo "run-all: no role has a molecule/default scenario under $repo/roles" >&2
  exit 2
fi

mkdir -p "$logs"
# The gwms_* scenarios install gwms offline (their containers have no network) from a
# wheel and a wheelhouse built here, in a directory of their own so that an edit of the
# tree during a run does not change the wheel under a scenario (idempotence).
wheels="$repo/build/molecule-wheels"
echo "run-all: building the gwms wheel and wheelhouse (log: build/molecule/wheels.log)"
ansible-playbook "$repo/playbooks/wheels.yml" -e gwms_install_offline=true \
  -e "gwms_build_dir=$wheels" >"$logs/wheels.log" 2>&1 || {
  echo "run-all: building the wheels failed; see $logs/wheels.log" >&2
  exit 2
}
GWMS_MOLECULE_WHEEL=$(ls "$wheels"/wheels/gwms_cloud-*.whl)
export GWMS_MOLECULE_WHEEL GWMS_MOLECULE_WHEELHOUSE="$wheels/wheelhouse.tar"

jobs="${GWMS_MOLECULE_JOBS:-2}"
case "$jobs" in
  '' | *[!0-9]* | 0) echo "run-all: GWMS_MOLECULE_JOBS must be a positive integer, not '$jobs'" >&2; exit 2 ;;
esac

# One scenario, in the background: its log, then its exit code and seconds in $logs/$role.result.
run_scenario() {
  local role=$1 start=$SECONDS rc
  (cd "$repo/roles/$role" && molecule test) >"$logs/$role.log" 2>&1
  rc=$?
  echo "$rc $((SECONDS - start))" >"$logs/$role.result"
}

# Interrupted (Ctrl-C, or SIGTERM from CI): stop the running scenarios, then destroy the
# instances of every scenario started, so that no container is left behind.
started=()
declare -A scenario_pid
stop_scenarios() {
  trap - INT TERM
  echo "run-all: interrupted; stopping ${started[*]:-nothing} and destroying their instances" >&2
  local role
  for role in "${started[@]}"; do kill -TERM -- "-${scenario_pid[$role]}" 2>/dev/null; done
  wait
  for role in "${started[@]}"; do
    (cd "$repo/roles/$role" && molecule destroy) >>"$logs/$role.log" 2>&1 ||
      echo "run-all: molecule destroy of $role failed; see build/molecule/$role.log" >&2
  done
  exit 130
}
trap stop_scenarios INT TERM
# Each scenario in a process group of its own (job control), so that it can be stopped whole.
set -m

for role in "${roles[@]}"; do
  rm -f "$logs/$role.result"
  if [ ! -f "$repo/roles/$role/molecule/default/molecule.yml" ]; then
    echo "run-all: $repo/roles/$role/molecule/default/molecule.yml is missing; give a role that has a scenario" >&2
    echo "2 0 no-scenario" >"$logs/$role.result"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  echo "run-all: $role: molecule test (log: build/molecule/$role.log)"
  run_scenario "$role" &
  scenario_pid[$role]=$!
  started+=("$role")
done
wait
set +m
trap - INT TERM

failed=()
summary=()
for role in "${roles[@]}"; do
  read -r rc took note <"$logs/$role.result" || { rc=2 took=0 note=no-result; }
  if [ "${note:-}" = no-scenario ]; then
    failed+=("$role")
    summary+=("$(printf '%-20s %s' "$role" 'no scenario')")
  elif [ "$rc" -eq 0 ]; then
    summary+=("$(printf '%-20s passed  %4ss' "$role" "$took")")
  else
    failed+=("$role")
    summary+=("$(printf '%-20s FAILED  %4ss' "$role" "$took")")
    echo "run-all: $role failed (exit $rc); the last lines of its log:" >&2
    grep -n -E 'fatal:|FAILED!|\[ERROR\]|CRITICAL|ERROR ' -A8 "$logs/$role.log" | tail -60 >&2
    tail -15 "$logs/$role.log" >&2
  fi
done

echo
echo "run-all: Molecule results ($jobs at a time, ${SECONDS}s in all)"
printf '  %s\n' "${summary[@]}"
passed=$(( ${#roles[@]} - ${#failed[@]} ))
echo "${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
