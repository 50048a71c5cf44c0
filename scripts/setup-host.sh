#!/usr/bin/env bash
# Prepare the admin host for metalctl's lab: Debian packages, a running dockerd,
# and Consul in the artifact cache. Idempotent: installs and starts only what is missing.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ $(id -u) -ne 0 ]]; then
  die "this needs root (it installs Debian packages and starts dockerd). Run: sudo make setup"
fi
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu admin hosts"

packages=(docker.io debootstrap iproute2 iptables openssh-client ca-certificates curl)
# The PXE boot service: dnsmasq (DHCP/TFTP), Debian's iPXE binaries (undionly.kpxe,
# snponly.efi, ipxe.efi), busybox's udhcpc and tftp as clients in its tests.
packages+=(dnsmasq-base ipxe busybox-static)
# `boot serve --package-cache`: apt-cacher-ng, Debian's archive for nodes without internet
# (metalctl runs its own instance; no system daemon starts where policy-rc.d or no init forbids).
packages+=(apt-cacher-ng)
# The VM lab and image builds (issue 9): QEMU with SeaBIOS, OVMF and iPXE NIC ROMs; disk
# image tools (the host cannot mount vfat: mtools writes the ESP); zstd, cpio for images.
packages+=(qemu-system-x86 qemu-utils ovmf ipxe-qemu seabios fdisk dosfstools mtools
  genisoimage zstd cpio e2fsprogs)
# The Ironic backend's tests (issue 10): Ironic's ipmi driver needs ipmitool to load; its
# config drives are built with genisoimage (above).
packages+=(ipmitool)
install_missing "Debian packages" "${packages[@]}"

docker_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
if docker_up; then
  say "dockerd running ($(docker version --format '{{.Server.Version}}'))"
else
  if [[ -d /run/systemd/system ]]; then
    say "starting docker.service"
    systemctl start docker
  else
    # No systemd as PID 1 (CI and build machines): run dockerd directly.
    say "starting dockerd (log: /var/log/metalctl-dockerd.log)"
    nohup /usr/sbin/dockerd >/var/log/metalctl-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker_up && break; sleep 1; done
  docker_up || die "dockerd did not answer within 60 s; see /var/log/metalctl-dockerd.log"
  say "dockerd running"
fi

bash "$(dirname "$0")/fetch-consul.sh"

# A standalone Ironic (+ the baremetal CLI, sushy-tools) in its own cached venv, for the
# Ironic tests and benchmarks.
bash "$(dirname "$0")/setup-ironic.sh" >/dev/null
