#!/usr/bin/env bash
# Build the Debian 12 (bookworm) base image every Molecule scenario runs in:
# debootstrap + `podman import`, systemd as PID 1, no registry pulls (DESIGN.md §3).
# Rebuilds only when the image is missing or an input (this script, the package
# list, the suite, the mirror) changed. Needs root (debootstrap, rootful podman).
#
#   tests/molecule/make-base-image.sh            # build if needed
#   GWMS_MOLECULE_REBUILD=1 tests/molecule/...   # force a rebuild
set -euo pipefail

IMAGE="${GWMS_MOLECULE_IMAGE:-localhost/gwms-debian12-systemd:latest}"
SUITE=bookworm
MIRROR="${GWMS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${GWMS_MOLECULE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gwms-cloud/molecule}"
# What every role's converge expects to find already there, so scenarios never
# need the network: Ansible's apt module (python3-apt), systemd, time sync, sudo.
INCLUDE=acl,systemd,systemd-sysv,dbus,python3,python3-apt,sudo,systemd-timesyncd,procps,iproute2,ca-certificates,gnupg,logrotate,cron,less

if [ "$(id -u)" != 0 ]; then
  echo "make-base-image: run as root (debootstrap and rootful podman need it), e.g. sudo $0" >&2
  exit 2
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "make-base-image: $tool is missing; run tests/molecule/setup-host.sh first" >&2; exit 2; }
done

inputs_hash=$( { cat "$0"; echo "$SUITE $MIRROR $INCLUDE"; } | sha256sum | cut -c1-16)
current=$(podman image inspect --format '{{ index .Labels "gwms.inputs" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$inputs_hash" ] && [ -z "${GWMS_MOLECULE_REBUILD:-}" ]; then
  echo "make-base-image: $IMAGE is up to date ($inputs_hash)"
  exit 0
fi

mkdir -p "$CACHE"
tarball="$CACHE/debian12-systemd-$inputs_hash.tar"
if [ ! -s "$tarball" ] || [ -n "${GWMS_MOLECULE_REBUILD:-}" ]; then
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  echo "make-base-image: debootstrap $SUITE from $MIRROR (a few minutes)"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { echo "make-base-image: debootstrap failed; see $CACHE/debootstrap.log" >&2; exit 1; }

  # A container boots straight to multi-user with no consoles, no udev, no hostname fight.
  echo 'gwms-molecule' >"$root/etc/hostname"
  : >"$root/etc/machine-id"
  ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
  for unit in getty@tty1.service systemd-udevd.service systemd-udev-trigger.service \
              systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount \
              systemd-modules-load.service dev-hugepages.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/90gwms-no-recommends"
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
  trap - EXIT
fi

# Older tarballs are stale inputs: keep only the current one.
find "$CACHE" -maxdepth 1 -name 'debian12-systemd-*.tar' ! -name "$(basename "$tarball")" -delete

podman import --quiet \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL gwms.inputs=$inputs_hash" \
  "$tarball" "$IMAGE" >/dev/null
echo "make-base-image: imported $IMAGE ($inputs_hash)"
