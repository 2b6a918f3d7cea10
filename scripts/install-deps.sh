#!/usr/bin/env bash
# Install the Debian packages kvlab's netns runtime needs. Idempotent: installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have bird || need+=(bird)
have ip || need+=(iproute2)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# Real VMs: QEMU (TCG) guests. The guest image itself is built by harness/guestimage.py from
# 'apt-get download linux-image-amd64 busybox-static' (nothing installed on the host; cpio,
# xz and module dependencies are handled in Python), so apt only has to know those packages.
have qemu-system-x86_64 || need+=(qemu-system-x86)
guest_pkgs_known() { apt-cache show --no-all-versions linux-image-amd64 busybox-static >/dev/null 2>&1; }
lists_ok=1
if command -v apt-cache >/dev/null 2>&1 && ! guest_pkgs_known; then lists_ok=0; fi

if [ ${#need[@]} -eq 0 ] && [ "$lists_ok" -eq 1 ]; then
  echo "==> system packages: all present (bird, iproute2, python3-venv, qemu-system-x86)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "kvlab: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  else
    echo "kvlab: apt does not know linux-image-amd64/busybox-static (guest image); run: sudo apt-get update" >&2
  fi
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
if ! guest_pkgs_known; then
  echo "kvlab: apt knows no linux-image-amd64/busybox-static even after 'apt-get update';" \
    "the QEMU guest image needs the Debian archive (main) in the apt sources" >&2
  exit 2
fi
# Debian enables BIRD's own service on install; the lab runs its own daemons in namespaces.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now bird.service bird6.service >/dev/null 2>&1 || true
fi
