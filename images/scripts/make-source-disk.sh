#!/bin/bash
# Make the qemu source disk where no cloud image can be downloaded (DESIGN.md §3).
#
# In production the qemu source is a distribution's generic cloud image. Here the
# source is a Debian root file system made by debootstrap, packed into an ext4
# image with `mkfs.ext4 -d` (no loop mounts, no bootloader) and converted to qcow2;
# Packer boots it with the kernel and initrd given directly (-kernel/-initrd).
#
# Two steps, so the caller can cache each one under the hash of its inputs:
#   make-source-disk.sh tree TREE_DIR [SUITE] [MIRROR]
#       debootstrap a bootable Debian (kernel, systemd, sshd, python3) into TREE_DIR
#   make-source-disk.sh disk TREE_DIR OUT_DIR SSH_PUBKEY_FILE [SIZE]
#       OUT_DIR/{disk.qcow2,vmlinuz,initrd.img,disk.qcow2.sha256}; root accepts the key
# Needs root (debootstrap, file ownership in the image), debootstrap, e2fsprogs, qemu-utils.
set -euo pipefail

PACKAGES=linux-image-amd64,initramfs-tools,systemd-sysv,udev,dbus,kmod,openssh-server,python3,python3-apt,sudo,ca-certificates,iproute2

die() { echo "make-source-disk: $*" >&2; exit 2; }

make_tree() {
    local tree=$1 suite=${2:-bookworm} mirror=${3:-http://deb.debian.org/debian}
    [ "$(id -u)" = 0 ] || die "debootstrap needs root; run as root or with sudo"
    command -v debootstrap >/dev/null || die "debootstrap is missing; apt-get install debootstrap"
    local partial="$tree.partial"
    rm -rf "$partial"
    mkdir -p "$partial"
    debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$partial" "$mirror"

    echo gwms-glidein >"$partial/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tgwms-glidein\n' >"$partial/etc/hosts"
    echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >"$partial/etc/fstab"
    # qemu user-mode networking: DHCP on the first NIC, slirp's DNS.
    mkdir -p "$partial/etc/systemd/network"
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' \
        >"$partial/etc/systemd/network/50-dhcp.network"
    echo 'nameserver 10.0.2.3' >"$partial/etc/resolv.conf"
    chroot "$partial" systemctl enable systemd-networkd.service ssh.service
    # Root logs in only with the build key (added by `disk`); no password.
    chroot "$partial" passwd -l root
    printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
        >"$partial/etc/ssh/sshd_config.d/50-gwms-build.conf"
    chroot "$partial" apt-get clean
    rm -rf "$partial"/var/lib/apt/lists/*
    rm -rf "$tree"
    mv "$partial" "$tree"
}

make_disk() {
    local tree=$1 out=$2 pubkey=$3 size=${4:-3G}
    [ "$(id -u)" = 0 ] || die "packing the image keeps file owners, so it needs root"
    [ -d "$tree/etc" ] || die "$tree is not a debootstrap tree; run the tree step first"
    [ -r "$pubkey" ] || die "cannot read the SSH public key $pubkey"
    local partial="$out.partial"
    rm -rf "$partial"
    mkdir -p "$partial"
    local stage="$partial/root"
    cp -a "$tree" "$stage"
    install -d -m 0700 "$stage/root/.ssh"
    install -m 0600 "$pubkey" "$stage/root/.ssh/authorized_keys"
    # Fresh host keys per disk, never shared through the cached tree.
    rm -f "$stage"/etc/ssh/ssh_host_*
    chroot "$stage" ssh-keygen -A >/dev/null
    local kernels=("$stage"/boot/vmlinuz-*) initrds=("$stage"/boot/initrd.img-*)
    [ -f "${kernels[-1]}" ] && [ -f "${initrds[-1]}" ] || die "no kernel or initrd in $tree/boot"
    cp "${kernels[-1]}" "$partial/vmlinuz"
    cp "${initrds[-1]}" "$partial/initrd.img"
    truncate -s "$size" "$partial/disk.raw"
    mkfs.ext4 -q -F -L gwms-root -d "$stage" "$partial/disk.raw"
    rm -rf "$stage"
    qemu-img convert -O qcow2 "$partial/disk.raw" "$partial/disk.qcow2"
    rm -f "$partial/disk.raw"
    (cd "$partial" && sha256sum disk.qcow2 >disk.qcow2.sha256)
    rm -rf "$out"
    mv "$partial" "$out"
}

case "${1:-}" in
    tree) shift; [ $# -ge 1 ] || die "usage: $0 tree TREE_DIR [SUITE] [MIRROR]"; make_tree "$@" ;;
    disk) shift; [ $# -ge 3 ] || die "usage: $0 disk TREE_DIR OUT_DIR SSH_PUBKEY_FILE [SIZE]"; make_disk "$@" ;;
    *) die "usage: $0 tree|disk ... (see the comment at the top of this script)" ;;
esac
