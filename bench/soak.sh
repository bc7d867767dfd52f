#!/usr/bin/env bash
# Soak (issue 16, item 3): concurrent writers through the HTTP API (REST inserts and updates,
# an RPC, storage uploads, refresh-token grants) against `agencyflow serve` while its embedded
# PostgreSQL postmaster is killed with -9 again and again; then every write answered 2xx must
# be there exactly once, every write answered with an error must have left nothing (or, its
# answer lost at COMMIT, all of itself), no orphan files, and refresh tokens must still rotate.
# The driver is the test `soak_long_run` in crates/server/tests/cli.rs (its short version runs
# in CI); this script runs it for a long time and prints the report.
# Usage: bench/soak.sh [minutes]   (30; KILL_EVERY=90 seconds between kills, WRITERS=2 threads
# per kind of write; the debug build, as the tests use)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
export CARGO_INCREMENTAL=0
export AGENCYFLOW_SOAK_SECS=$(( minutes * 60 ))
export AGENCYFLOW_SOAK_KILL_EVERY_SECS=${KILL_EVERY:-90}
export AGENCYFLOW_SOAK_WRITERS=${WRITERS:-2}
out=$(mktemp /tmp/agencyflow-soak-XXXX.log)
echo "soak: ${minutes} min, a kill every ${AGENCYFLOW_SOAK_KILL_EVERY_SECS} s; uptime at start: $(uptime)"
# Built here, then run directly (cargo would hold the target directory's lock for the whole run).
test_bin=$(cargo test --locked -p agencyflow --test cli --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cli" and m.get("executable"):
        print(m["executable"])')
(cd crates/server && "$test_bin" soak_long_run --exact --ignored --nocapture) 2>&1 | tee "$out" | grep --line-buffered '^soak:' || {
  echo "soak failed; full output in $out"; tail -40 "$out"; exit 1; }
echo "uptime at end: $(uptime)"
echo "full output: $out"
