#!/usr/bin/env bash
# Prepare this host for Molecule's podman driver: podman, runc, debootstrap and the
# containers.conf measured to work here (DESIGN.md §3). Idempotent; needs root or sudo.
set -euo pipefail

PACKAGES=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs)
CONF=/etc/containers/containers.conf

if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-host: installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# crun (podman's default) fails here; runc works. The default ulimits keep systemd
# and sshd-less containers inside the limits this host allows.
want='# Written by tests/molecule/setup-host.sh (gwms-cloud): runtime and ulimits that work here.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]

[engine]
runtime = "runc"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
  if [ -f "$CONF" ] && ! grep -q 'gwms-cloud' "$CONF"; then
    "${SUDO[@]}" cp -p "$CONF" "$CONF.gwms-orig"
    echo "setup-host: kept the previous $CONF as $CONF.gwms-orig"
  fi
  "${SUDO[@]}" mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$want" | "${SUDO[@]}" tee "$CONF" >/dev/null
  echo "setup-host: wrote $CONF"
fi
