#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo use, when they are missing.
# Runs as root on Debian (CI and a newcomer's machine); prints what it installs.
set -euo pipefail

packages=(
  openssl            # the real `openssl cmp` client and mock server (interop peers)
  openssh-server     # sshd of the network-namespace device hosts
  openssh-client
  tini               # PID 1 of each device host
  iproute2           # ip netns / veth / bridge
  util-linux         # unshare
  curl
  jq                 # the README quickstart reads JSON with it
  python3-venv
  shellcheck         # ansible-test's shellcheck sanity test checks nothing without it
  strongswan-pki     # strongSwan's `pki --est/--estca`: a real EST client for the interop tests
  libstrongswan-standard-plugins
  libstrongswan-extra-plugins
  postgresql         # PostgreSQL 15 server binaries: the multi-instance tests run a throwaway cluster
  podman             # the server role's hosts with a filesystem of their own (tools/podman_hosts.py)
  runc               # Podman's runtime here (crun cannot set RLIMIT_NOFILE in this sandbox)
  debootstrap        # builds the Debian image of those hosts (localhost/trustpoint-debian:12)
  systemd            # systemd-analyze verify: the role's unit checked without systemd as PID 1
  chromium           # headless browser of the web page tests (driven by Selenium through chromium-driver)
  chromium-driver
  fonts-dejavu-core  # a font for the pages' screenshots
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root to install packages: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # PostgreSQL clusters that exist before the install are the operator's: left alone below.
  clusters_before=" $(pg_lsclusters --no-header 2>/dev/null | awk '{printf "%s/%s ", $1, $2}' || true) "
  # Another apt (unattended-upgrades, another setup) may hold the dpkg lock: wait for it instead of failing.
  apt_wait=(-o DPkg::Lock::Timeout=600)
  apt-get "${apt_wait[@]}" update -qq
  apt-get "${apt_wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v pg_lsclusters >/dev/null; then
    # Debian's postgresql package creates a "main" cluster on port 5432 and, with a service manager,
    # starts it. The tests need none (they run their own throwaway clusters): stop the one the install
    # created and let it start only by hand (`pg_ctlcluster VERSION main start`).
    pg_lsclusters --no-header | while read -r version cluster port status _rest; do
      [[ "$clusters_before" == *" $version/$cluster "* ]] && continue
      if [ "$status" = online ]; then
        echo "stopping the PostgreSQL cluster $version/$cluster the install started (port $port)"
        pg_ctlcluster "$version" "$cluster" stop || true
      fi
      if [ -f "/etc/postgresql/$version/$cluster/start.conf" ]; then
        echo manual >"/etc/postgresql/$version/$cluster/start.conf"
      fi
    done
  fi
fi
