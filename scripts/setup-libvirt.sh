#!/usr/bin/env bash
# The Vagrant test drive's host side (docs/test-drive.md): vagrant + vagrant-libvirt,
# libvirtd running, and the libvirt storage pool 'metalctl' the Vagrantfile's VMs use.
# Idempotent: installs and starts only what is missing. Needs root.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

[[ $(id -u) -eq 0 ]] || die "this needs root (Debian packages, libvirtd). Run: sudo $0"
PY=${PY:-.venv/bin/python}
POOL_DIR=/var/lib/metalctl/vagrant-pool
URI=qemu:///system

# libvirt-daemon-system, not the minimal daemon packages: it creates the libvirt-qemu user.
packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients)
install_missing "vagrant, vagrant-libvirt and libvirt" "${packages[@]}"

libvirt_up() { virsh -c "$URI" version >/dev/null 2>&1; }
if ! libvirt_up; then
  if [[ -d /run/systemd/system ]]; then
    say "starting libvirtd.service"
    systemctl start libvirtd
  else
    # No systemd as PID 1 (CI and build machines): run the daemons directly.
    mkdir -p /var/log/libvirt
    export LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log"
    pgrep -x virtlogd >/dev/null || virtlogd -d
    accel=tcg
    if [[ -e /dev/kvm ]]; then
      accel="$("$PY" -c 'from metalctl.vmlab.qemu import accelerator; print(accelerator())')"
    fi
    if [[ -e /dev/kvm && $accel != kvm ]]; then
      # /dev/kvm is there but QEMU cannot run a guest with it. libvirtd then finds KVM
      # "usable", probes QEMU, gets no KVM, throws its capability cache away and probes
      # again on every call: ~4 s each, 5 min for a 2-VM `vagrant up` (measured). Hidden
      # from libvirtd (its own mount namespace), the same `vagrant up` takes ~1 s.
      # Per-VM /dev namespaces would copy the mask in and fail: off (qemu.conf).
      say "KVM does not work here: libvirtd runs TCG guests with /dev/kvm hidden from it"
      grep -q '^namespaces = \[\]' /etc/libvirt/qemu.conf ||
        printf '\n# metalctl (scripts/setup-libvirt.sh): /dev/kvm is hidden from libvirtd\nnamespaces = []\n' >>/etc/libvirt/qemu.conf
      install -m 000 /dev/null /run/metalctl-no-kvm
      unshare -m --propagation private sh -c \
        'mount --bind /run/metalctl-no-kvm /dev/kvm && exec libvirtd -d' \
        </dev/null >/dev/null 2>&1
    else
      libvirtd -d </dev/null >/dev/null 2>&1
    fi
  fi
  for _ in $(seq 1 30); do libvirt_up && break; sleep 1; done
  libvirt_up || die "libvirtd did not answer on $URI within 30 s; see /var/log/libvirt/"
  say "libvirtd running"
fi

if ! virsh -c "$URI" pool-info metalctl >/dev/null 2>&1; then
  say "libvirt storage pool 'metalctl' in $POOL_DIR"
  mkdir -p "$POOL_DIR"
  virsh -c "$URI" pool-define-as metalctl dir --target "$POOL_DIR" >/dev/null
fi
if [[ "$(virsh -c "$URI" pool-info metalctl | awk '/^State:/ {print $2}')" != running ]]; then
  virsh -c "$URI" pool-start metalctl >/dev/null
fi
virsh -c "$URI" pool-autostart metalctl >/dev/null
