#!/usr/bin/env bash
# Start-up and idle memory of `agencyflow serve` on the embedded database.
# First start = initdb + all migrations + listening; warm start = existing data directory.
# Usage: bench/startup.sh [runs]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --locked -q -p agencyflow
bin=./target/release/agencyflow
dir=$(mktemp -d /tmp/agencyflow-bench-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')

now_ms() { date +%s%3N; }
start_and_time() {
  local t0 pid
  t0=$(now_ms)
  $bin --data-dir "$dir" serve --port "$port" >/dev/null 2>&1 &
  pid=$!
  until curl -sf "localhost:$port/health" >/dev/null 2>&1; do sleep 0.01; done
  echo "$(( $(now_ms) - t0 )) $pid"
}
stop() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }

read -r first pid < <(start_and_time)
sleep 5
rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
stop "$pid"
warm=()
for _ in $(seq "$runs"); do
  read -r ms pid < <(start_and_time)
  warm+=("$ms")
  stop "$pid"
done
sorted=$(printf '%s\n' "${warm[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "first start (initdb + migrations): ${first} ms"
echo "warm start, median of $runs: ${median} ms (all: ${warm[*]})"
echo "idle RSS after 5 s (server only, PostgreSQL excluded): $((rss_kb / 1024)) MiB (${rss_kb} kB)"
rm -rf "$dir"
