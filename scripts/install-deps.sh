#!/usr/bin/env bash
# Install the Debian packages kvlab's netns runtime needs. Idempotent: installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have bird || need+=(bird)
have ip || need+=(iproute2)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  echo "==> system packages: all present (bird, iproute2, python3-venv)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "kvlab: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
  exit 2
fi
echo "==> installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q --no-install-recommends "${need[@]}"
# Debian enables BIRD's own service on install; the lab runs its own daemons in namespaces.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now bird.service bird6.service >/dev/null 2>&1 || true
fi
