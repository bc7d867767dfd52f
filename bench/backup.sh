#!/usr/bin/env bash
# Backup and restore time (docs/operations.md): the demo agency plus FILES_MIB of uploaded
# files, backed up while `serve` runs and while it does not (the cluster started for the
# backup), then restored into fresh data directories. With SCALE=1 the database also gets
# bench/scale.sql (100 orgs x 1,000 clients). With PITR=1 it also times backups taken while
# the cluster archives its WAL (they add a base backup) and `restore --until`.
# Usage: bench/backup.sh [runs]   (FILES_MIB=20; BIN=target/debug/agencyflow skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
FILES_MIB=${FILES_MIB:-20}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p agencyflow
  BIN=./target/release/agencyflow
fi
export RUST_LOG=warn
dir=$(mktemp -d /tmp/agencyflow-backup-XXXX); chmod 755 "$dir"
src=$dir/src
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
now_ms() { date +%s%3N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

$BIN --data-dir "$src" seed --demo >/dev/null
$BIN --data-dir "$src" serve --port "$port" --ai-embed-worker false >"$dir/server.log" 2>&1 &
server=$!
until curl -sf "localhost:$port/health" >/dev/null 2>&1; do sleep 0.05; done
if [ "${SCALE:-0}" = 1 ]; then
  read -r pgport sock < <(sed -n '4p;5p' "$src/pg/postmaster.pid" | paste -sd' ')
  psql -X -q -h "$sock" -p "$pgport" -U postgres -d postgres -v ON_ERROR_STOP=1 -f bench/scale.sql >/dev/null
fi
key=$($BIN --data-dir "$src" keys | awk '/^service_role/ {print $3}')
for i in $(seq 10); do  # FILES_MIB in 10 files of random bytes (incompressible)
  head -c $(( FILES_MIB * 104857 )) /dev/urandom >"$dir/f.bin"
  curl -sf -H "apikey: $key" -H "Authorization: Bearer $key" -H 'content-type: application/octet-stream' \
    --data-binary @"$dir/f.bin" "localhost:$port/storage/v1/object/documents/bench/file-$i.bin" >/dev/null
done
rm "$dir/f.bin"

serving=(); stopped=(); restore=()
for r in $(seq "$runs"); do
  t0=$(now_ms); $BIN --data-dir "$src" backup "$dir/serving-$r.tar.gz" >/dev/null; serving+=($(( $(now_ms) - t0 )))
done
kill -TERM "$server"; while kill -0 "$server" 2>/dev/null; do sleep 0.05; done
for r in $(seq "$runs"); do
  t0=$(now_ms); $BIN --data-dir "$src" backup "$dir/stopped-$r.tar.gz" >/dev/null; stopped+=($(( $(now_ms) - t0 )))
  t0=$(now_ms); $BIN --data-dir "$dir/dst-$r" restore "$dir/stopped-$r.tar.gz" >/dev/null; restore+=($(( $(now_ms) - t0 )))
  rm -rf "$dir/dst-$r"
done
if [ "${PITR:-0}" = 1 ]; then
  $BIN --data-dir "$src" serve --port "$port" --ai-embed-worker false --backup-every 1d \
    --backup-dir "$dir/sched" >"$dir/server2.log" 2>&1 &
  server=$!
  until curl -sf "localhost:$port/health" >/dev/null 2>&1; do sleep 0.05; done
  read -r pgport sock < <(sed -n '4p;5p' "$src/pg/postmaster.pid" | paste -sd' ')
  q() { psql -X -q -At -h "$sock" -p "$pgport" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$1"; }
  based=(); pitr=()
  for r in $(seq "$runs"); do
    t0=$(now_ms); $BIN --data-dir "$src" backup "$dir/sched/pitr-$r.tar.gz" >/dev/null; based+=($(( $(now_ms) - t0 )))
  done
  q "create table if not exists bench_pitr (at timestamptz default clock_timestamp())"
  moment=$(q "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
  q "insert into bench_pitr default values"
  seg=$(q "select pg_walfile_name(pg_switch_wal())")
  until [ -f "$dir/sched/wal/$seg.gz" ]; do sleep 0.1; done
  for r in $(seq "$runs"); do
    t0=$(now_ms); $BIN --data-dir "$dir/pitr-$r" restore "$dir/sched/pitr-$runs.tar.gz" --until "$moment" >/dev/null; pitr+=($(( $(now_ms) - t0 )))
    rm -rf "$dir/pitr-$r"
  done
  kill -TERM "$server"; while kill -0 "$server" 2>/dev/null; do sleep 0.05; done
  base=$(tar tzvf "$dir/sched/pitr-1.tar.gz" db/base.tar | awk '{print $3}')
  echo "archive with base backup: $(( $(stat -c %s "$dir/sched/pitr-1.tar.gz") / 1024 )) KiB (base backup $((base / 1024)) KiB uncompressed)"
  echo "backup while serving with WAL archiving (adds the base backup), median of $runs: $(median "${based[@]}") ms (all: ${based[*]})"
  echo "restore --until (base backup + WAL replay), median of $runs: $(median "${pitr[@]}") ms (all: ${pitr[*]})"
fi
size=$(stat -c %s "$dir/stopped-1.tar.gz")
dump=$(tar tzvf "$dir/stopped-1.tar.gz" db/database.dump | awk '{print $3}')
echo "archive: $((size / 1024)) KiB (database dump $((dump / 1024)) KiB uncompressed, ${FILES_MIB} MiB of files)"
echo "backup while serving, median of $runs: $(median "${serving[@]}") ms (all: ${serving[*]})"
echo "backup, cluster started for it, median of $runs: $(median "${stopped[@]}") ms (all: ${stopped[*]})"
echo "restore into a new data directory, median of $runs: $(median "${restore[@]}") ms (all: ${restore[*]})"
rm -rf "$dir"
