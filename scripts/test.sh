#!/usr/bin/env bash
# The whole test suite: the one command the README gives and CI runs.
# It installs what the tests need when it is missing, so a fresh machine
# with only the README's set-up passes it.
set -euo pipefail
cd "$(dirname "$0")/.."


# Nothing beyond the Rust toolchain is needed yet; later suites add their
# installs here, each guarded by a check so that re-running is cheap.

# One build shared by every test binary; tests run the real gateway binary.
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
