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
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
