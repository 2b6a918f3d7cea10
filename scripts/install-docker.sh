#!/usr/bin/env bash
# Docker engine for the real-stack runtime: install docker.io and debootstrap (the ToR image's
# base is made with debootstrap when no registry is reachable) and make sure a daemon answers.
# Idempotent. Without systemd (CI containers) dockerd is started fully detached (own session,
# no inherited descriptors), logging to $KVLAB_DOCKERD_LOG, so it never holds `make` up.
#
# Environment: DOCKER_HOST (unix:// socket to use), KVLAB_DOCKERD_ARGS (extra dockerd flags),
# KVLAB_DOCKERD_LOG (default /var/log/kvlab-dockerd.log), KVLAB_DOCKERD_TIMEOUT (default 60 s).
set -euo pipefail

LOG="${KVLAB_DOCKERD_LOG:-/var/log/kvlab-dockerd.log}"
TIMEOUT="${KVLAB_DOCKERD_TIMEOUT:-60}"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
answers() { docker info >/dev/null 2>&1; }
# Not root: say what is missing. Under CI that fails; elsewhere the Docker tests skip instead.
cannot() {
  echo "kvlab: $1" >&2
  if [ -n "${CI:-}" ]; then exit 2; fi
  echo "kvlab: continuing without Docker: the Docker tests will be skipped" >&2
  exit 0
}

need=()
have dockerd || need+=(docker.io)
have debootstrap || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    cannot "missing Debian packages: ${need[*]}; run as root or: sudo apt-get install ${need[*]}"
  fi
  echo "==> installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if answers; then
  echo "==> Docker daemon: answering ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  cannot "no Docker daemon answers; start it as root: sudo $0"
fi

# In a container on cgroup v2 whose cgroup namespace root still holds our processes, the
# kernel refuses to delegate controllers to dockerd's child cgroups ("no internal processes"):
# move every process of the root into a leaf cgroup first, then enable the controllers.
nest_cgroup_v2() {
  local root=/sys/fs/cgroup
  [ -f "$root/cgroup.controllers" ] || return 0
  [ "$(cat /proc/self/cgroup)" = "0::/" ] || return 0 # not at the root of a cgroup namespace
  [ -z "$(cat "$root/cgroup.subtree_control")" ] || return 0
  mkdir -p "$root/kvlab-init"
  local pid
  while read -r pid; do
    echo "$pid" >"$root/kvlab-init/cgroup.procs" 2>/dev/null || true
  done <"$root/cgroup.procs"
  local c
  for c in $(cat "$root/cgroup.controllers"); do
    echo "+$c" >"$root/cgroup.subtree_control" 2>/dev/null || echo "kvlab: cgroup controller $c not delegated" >&2
  done
}

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && [ -z "${DOCKER_HOST:-}" ]; then
  echo "==> starting docker.service"
  systemctl start docker.service
elif [ -z "${DOCKER_HOST:-}" ] && [ -s /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  dockerd_pid=$(cat /var/run/docker.pid) # still starting (e.g. by the package's init script)
  echo "==> waiting for the dockerd already starting (pid $dockerd_pid)"
else
  nest_cgroup_v2
  args=()
  case "${DOCKER_HOST:-}" in
    unix://*) args+=(--host "$DOCKER_HOST") ;;
    "") ;;
    *) echo "kvlab: DOCKER_HOST=$DOCKER_HOST is not a local unix socket; start that daemon yourself" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2206 # word splitting of the extra flags is intended
  args+=(${KVLAB_DOCKERD_ARGS:-})
  mkdir -p "$(dirname "$LOG")"
  echo "==> starting dockerd in the background (log: $LOG)"
  (
    # close every inherited descriptor above stderr (make's jobserver, CI pipes) ...
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    # ... and detach: new session, stdin from /dev/null, output to the log only
    exec setsid nohup "$(command -v dockerd || echo /usr/sbin/dockerd)" "${args[@]}" </dev/null >>"$LOG" 2>&1
  ) &
  dockerd_pid=$!
fi

deadline=$((SECONDS + TIMEOUT))
until answers; do
  if [ -n "${dockerd_pid:-}" ] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
    echo "kvlab: dockerd exited; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "kvlab: no answer from the Docker daemon after ${TIMEOUT}s; see $LOG" >&2
    exit 1
  fi
  sleep 0.2 # polling `docker info` until the deadline
done
echo "==> Docker daemon: answering ($(docker info --format '{{.ServerVersion}}, storage {{.Driver}}'))"
