#!/usr/bin/env bash
# Installs everything tunneld needs to build, test, benchmark and run the demo,
# from Debian 12 packages only. Idempotent; safe to run on every invocation.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "scripts/deps.sh: run as root (it calls apt-get)" >&2; exit 1; }

packages=(
  build-essential cmake pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libssl-dev openssl
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  libpq-dev libsystemd-dev libnftnl-dev libmnl-dev
  libgtest-dev
  postgresql-15 postgresql-client-15
  stunnel4 nftables iptables iproute2 ethtool procps iputils-ping
  haproxy prometheus
  dpkg-dev fakeroot rpm lintian rpmlint debootstrap systemd
  python3 python3-pytest python3-cryptography
  clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-format-14 devscripts
  systemd-container dbus
  patroni etcd-server etcd-client
  gdb
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's postgresql package creates and starts a "main" cluster; tunneld's demo and
# tests use their own data directories and ports, so the packaged cluster is left alone.
