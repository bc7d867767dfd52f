#!/usr/bin/env bash
# /storage/v1 streaming throughput (issue: /storage/v1): a 100 MiB upload and download through
# the server (local backend, fsync + rename, RLS row write) against `cp` + `sync` of the same
# file on the same disk. Memory: the server's peak RSS stays flat (bodies stream, never buffered).
# Usage: bench/storage.sh   (SIZE_MIB=100; BIN=target/debug/agencyflow skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-100}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p agencyflow
  BIN=./target/release/agencyflow
fi
dir=$(mktemp -d /tmp/agencyflow-storage-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $BIN --data-dir "$dir" serve --port "$port" --storage-file-size-limit $(( (SIZE_MIB + 1) * 1048576 )) >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
svc=$($BIN --data-dir "$dir" keys | awk '/^service_role/ {print $3}')
H=(-H "apikey: $svc" -H "Authorization: Bearer $svc")
curl -sf "${H[@]}" -H 'content-type: application/json' -d '{"name":"bench"}' "localhost:$port/storage/v1/bucket" >/dev/null
head -c $(( SIZE_MIB * 1048576 )) /dev/urandom >"$dir/src.bin"
sleep 1
idle_kb=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
# Sample the server's RSS every 50 ms while the transfers run.
( peak=0; while kill -0 $server 2>/dev/null; do r=$(awk '/VmRSS/ {print $2}' /proc/$server/status 2>/dev/null || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$dir/peak"; sleep 0.05; done ) &
sampler=$!
mibs() { python3 -c "import sys; print(f'{$SIZE_MIB / float(sys.argv[1]):.0f} MiB/s ({float(sys.argv[1]):.2f} s)')" "$1"; }
t0=$(date +%s.%N); cp "$dir/src.bin" "$dir/copy.bin"; sync "$dir/copy.bin"; t1=$(date +%s.%N)
echo "cp + sync          : $(mibs "$(echo "$t1 - $t0" | bc)")"
up=$(curl -sf -o /dev/null -w '%{time_total}' "${H[@]}" -H 'content-type: application/octet-stream' \
  --data-binary @"$dir/src.bin" "localhost:$port/storage/v1/object/bench/big.bin")
echo "upload (POST)      : $(mibs "$up")"
down=$(curl -sf -o "$dir/down.bin" -w '%{time_total}' "${H[@]}" "localhost:$port/storage/v1/object/bench/big.bin")
echo "download (GET)     : $(mibs "$down")"
cmp "$dir/src.bin" "$dir/down.bin" && echo "round trip         : identical"
kill $sampler 2>/dev/null || true
peak_kb=$(cat "$dir/peak" 2>/dev/null || echo "$idle_kb")
echo "server RSS         : idle $((idle_kb / 1024)) MiB, peak during transfers $((peak_kb / 1024)) MiB (+$(( (peak_kb - idle_kb) / 1024 )) MiB)"
