#!/usr/bin/env bash
# The whole test suite: the one command the README gives and CI runs.
# It installs what the tests need when it is missing, so a fresh machine
# with only the README's set-up passes it. Re-running it is cheap.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cluster-wide rate-limit tests start their own redis-server on a spare
# loopback port (so they can stop and restart it): they need the binary.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# One build shared by every test binary; tests run the real gateway binary.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
