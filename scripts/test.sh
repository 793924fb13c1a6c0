#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs every check the project is judged on:
# formatting, clippy, the unit/integration test suite (crash test, state-commitment tests), the
# real-client suite against `tessera dev` (web3.py: ERC-20, fees, calls, bad input, restarts), and
# the external conformance fixtures in ../shared/fixtures through tessera-exec, sequentially and
# through Block-STM.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
fixtures="${TESSERA_FIXTURES:-$root/../shared/fixtures}"

bash scripts/setup.sh

# RocksDB's C++ takes many minutes to compile, and cargo compiles it again whenever the features
# of build-time dependencies differ between invocations (clippy, the test build and the binaries
# differ in which proc-macros they pull in). Build the archive once per RocksDB version and link
# that one everywhere (librocksdb-sys's ROCKSDB_LIB_DIR/ROCKSDB_STATIC); only the bindings are
# still generated per build.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
    rocksdb_version="$(grep -A1 '^name = "librocksdb-sys"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')"
    prebuilt="$target_dir/rocksdb-prebuilt/$rocksdb_version"
    if [ ! -f "$prebuilt/librocksdb.a" ]; then
        echo "== building RocksDB $rocksdb_version once"
        cargo build --locked -p librocksdb-sys
        archive="$(ls -t "$target_dir"/debug/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)"
        mkdir -p "$prebuilt"
        cp "$archive" "$prebuilt/librocksdb.a.tmp"
        mv "$prebuilt/librocksdb.a.tmp" "$prebuilt/librocksdb.a"
    fi
    export ROCKSDB_LIB_DIR="$prebuilt" ROCKSDB_STATIC=1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit and integration tests"
cargo nextest run --workspace --locked --no-fail-fast

echo "== node: real-client tests (web3.py, eth-account, vyper)"
cargo build --locked -p tessera-node --bin tessera
TESSERA_BIN="$target_dir/debug/tessera" bash scripts/rpc-tests.sh

echo "== node: 4 validators as real processes (consensus over libp2p, kill -9, restart, halt, resume)"
TESSERA_SUITE=tests/testnet TESSERA_BIN="$target_dir/debug/tessera" bash scripts/rpc-tests.sh

echo "== conformance"
cargo build --locked -p tessera-execution --bin tessera-exec
exec_bin="$target_dir/debug/tessera-exec"

echo "-- mainnet blocks"
"$exec_bin" blocks "$fixtures/mainnet-blocks"
# Block-STM on every block, compared with the sequential executor (receipts, gas, logs, the
# full state diff) besides the header checks.
for threads in 1 2 4 8; do
    echo "-- mainnet blocks, Block-STM with $threads threads"
    "$exec_bin" blocks "$fixtures/mainnet-blocks" --parallel --threads "$threads"
    echo "-- mainnet blocks, Block-STM over batches with $threads threads"
    "$exec_bin" blocks "$fixtures/mainnet-blocks" --parallel --batched --threads "$threads"
done

echo "-- the runner must notice a wrong expectation"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sample="$fixtures/ethereum-state-tests/stExample/add11.json"
python3 - "$sample" "$tmp/add11-corrupt.json" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
data = json.load(open(src))
case = next(iter(data.values()))
post = next(iter(case["post"].values()))[0]
h = post["hash"]
# change one hex digit of the expected state root
post["hash"] = h[:-1] + ("0" if h[-1] != "0" else "1")
json.dump(data, open(dst, "w"))
PY
if "$exec_bin" statetest "$tmp/add11-corrupt.json" > "$tmp/corrupt.log"; then
    cat "$tmp/corrupt.log"
    echo "FAIL: statetest accepted a corrupted expected hash" >&2
    exit 1
fi
grep -q "^FAIL .*state root" "$tmp/corrupt.log"
echo "statetest rejected the corrupted file: $(tail -n 1 "$tmp/corrupt.log")"

echo "-- Ethereum state tests, each also through Block-STM and compared with the sequential result"
"$exec_bin" statetest "$fixtures/ethereum-state-tests" --parallel | tee "$tmp/statetest.log" | grep -v '^FAIL' || true
grep '^FAIL' "$tmp/statetest.log" | head -50 || true
# The closing line decides: zero failures, skips only for unsupported forks (at most 1%).
python3 - "$tmp/statetest.log" <<'PY'
import re, sys
last = open(sys.argv[1]).read().strip().splitlines()[-1]
m = re.fullmatch(r"(\d+) passed, (\d+) failed, (\d+) skipped", last)
if not m:
    sys.exit(f"statetest: no closing line, got {last!r}")
passed, failed, skipped = map(int, m.groups())
total = passed + failed + skipped
if failed or skipped * 100 > total:
    sys.exit(f"statetest: {failed} failed, {skipped} of {total} skipped")
PY
tail -n 1 "$tmp/statetest.log"
