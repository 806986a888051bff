#!/usr/bin/env bash
# Run `molecule test` (destroy, create, converge, idempotence, verify, destroy) for each
# role given, or for every role under roles/ with a molecule/default scenario; fail if any
# fails. Builds the base image first when it is missing or stale. Logs: build/molecule/.
#
#   tests/molecule/run-all.sh                 # every role
#   tests/molecule/run-all.sh cvmfs htcondor  # some roles
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv="${VENV:-$repo/.venv}"
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
  for scenario in "$repo"/roles/*/molecule/default/molecule.yml; do
    [ -e "$scenario" ] || continue
    roles+=("$(basename "$(dirname "$(dirname "$(dirname "$scenario")")")")")
  done
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

failed=()
summary=()
for role in "${roles[@]}"; do
  dir="$repo/roles/$role"
  if [ ! -f "$dir/molecule/default/molecule.yml" ]; then
    echo "run-all: $dir/molecule/default/molecule.yml is missing; give a role that has a scenario" >&2
    failed+=("$role")
    summary+=("$(printf '%-20s %s' "$role" 'no scenario')")
    continue
  fi
  echo "run-all: $role: molecule test (log: build/molecule/$role.log)"
  start=$SECONDS
  (cd "$dir" && molecule test) >"$logs/$role.log" 2>&1
  rc=$?
  took=$((SECONDS - start))
  if [ "$rc" -eq 0 ]; then
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
echo "run-all: Molecule results"
printf '  %s\n' "${summary[@]}"
passed=$(( ${#roles[@]} - ${#failed[@]} ))
echo "${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
