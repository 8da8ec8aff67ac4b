#!/usr/bin/env bash
# Make a Docker engine reachable for --runner docker: install Debian's docker.io if needed and start
# dockerd in the background. It is started with no bridge and no iptables rules: the suite's
# containers run with --network none and get their link from the suite, so the engine adds
# nothing to the host's network. Idempotent: does nothing when an engine already answers.
set -euo pipefail
if docker info >/dev/null 2>&1; then echo "docker-engine: already running"; exit 0; fi
if ! command -v dockerd >/dev/null; then
  echo "docker-engine: installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io
fi
command -v debootstrap >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends debootstrap; }
log=/var/log/tcc-dockerd.log
nohup dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then echo "docker-engine: started (log $log)"; exit 0; fi
  sleep 0.5
done
echo "docker-engine: dockerd did not answer within 30 s; see $log" >&2
tail -20 "$log" >&2
exit 1
