#!/usr/bin/env bash
# Installs the Debian packages reel needs, only those missing (idempotent:
# nothing is installed twice). Debian bookworm; run as root or with sudo.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap gcc g++ libc6-dev
  librocksdb-dev libgrpc-dev libabsl-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler libcjson-dev libcmocka-dev uthash-dev
  # reel-sink: HTTP, HMAC, NATS JetStream, its control endpoint
  libcurl4-openssl-dev libssl-dev libnats-dev libmicrohttpd-dev
  # end-to-end tests: an independent gRPC client
  python3 python3-grpcio python3-protobuf python3-pytest python3-pytest-timeout
  # the Python client (clients/python): installed offline into a venv;
  # openssl makes its TLS test's certificate
  python3-venv python3-pip python3-setuptools python3-wheel openssl
  # end-to-end tests of reel-sink's NATS sinks
  nats-server
  # end-to-end tests of /metrics: two independent checks of the exposition
  # (prometheus_client's text parser, and promtool from prometheus)
  python3-prometheus-client prometheus
  # end-to-end tests of reel's clock: the wall clock stepped under reeld
  faketime
  # end-to-end tests of a data dir whose files disagree: RocksDB's ldb
  rocksdb-tools
  # fuzzing: libFuzzer from clang
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != "installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
