#!/usr/bin/env bash
# Build kvlab's guest image (Debian's kernel, busybox-static and bird) on a machine that is not
# Debian (the nightly's Ubuntu runner): in a debian:bookworm container, into the image cache
# (KVLAB_IMAGE_CACHE, default /var/cache/kvlab/images), where kvlab finds it when its own apt
# has no Debian candidates (the newest cached image is used). Run as root, from the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${KVLAB_IMAGE_CACHE:-/var/cache/kvlab/images}"
mkdir -p "$cache"
docker run --rm -v "$cache:/var/cache/kvlab/images" -v "$PWD:/src:ro" debian:bookworm bash -c '
  set -euo pipefail
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates > /dev/null
  cp -r /src /tmp/kvlab && python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q /tmp/kvlab
  /tmp/venv/bin/kvlab image build guest --bzimage'
