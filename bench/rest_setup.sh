#!/usr/bin/env bash
# Shared by bench/rest.sh and bench/rest_cpu.sh (sourced, not run): builds the release binary,
# starts it on a fresh data directory with the demo seed and bench/scale.sql, signs in a
# member, and captures from PostgreSQL's log the exact statements and parameters the server
# sends for the two cases, as pgbench scripts ($dir/pk.sql, $dir/embed.sql).
# Defines: bin port dir sock pgport server hdr pk_path embed_path, psql_ wrk_rps pgb_cmd pgb_tps.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=${T:-10}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --locked -q -p agencyflow
bin=./target/release/agencyflow
dir=$(mktemp -d /tmp/agencyflow-rest-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $bin --data-dir "$dir" serve --port "$port" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
read -r sock pgport < <(awk 'NR==5{s=$1} NR==4{p=$1} END{print s, p}' "$dir/pg/postmaster.pid")
psql_() { psql -X -q -At -h "$sock" -p "$pgport" -U postgres -d postgres "$@"; }
$bin --data-dir "$dir" seed --demo >/dev/null 2>&1
psql_ -v ON_ERROR_STOP=1 -f bench/scale.sql >/dev/null
anon=$($bin --data-dir "$dir" keys | awk '/^anon/ {print $3}')
token=$(curl -s -X POST "localhost:$port/auth/v1/token?grant_type=password" -H "apikey: $anon" -H 'content-type: application/json' \
  -d '{"email":"bench-member@agencyflow.local","password":"bench-password"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_token"])')
id=$(psql_ -c "select id from public.clients where org_id = 'b0000000-0000-4000-8000-000000000001' order by name limit 1")
pk_path="/rest/v1/clients?id=eq.$id"
embed_path="/rest/v1/clients?select=*,projects(*)&limit=100&order=name"
hdr=(-H "apikey: $anon" -H "Authorization: Bearer $token")
[ "$(curl -s "${hdr[@]}" "localhost:$port$pk_path" | python3 -c 'import sys,json;print(len(json.load(sys.stdin)))')" = 1 ]
[ "$(curl -s "${hdr[@]}" "localhost:$port$embed_path" | python3 -c 'import sys,json;print(len(json.load(sys.stdin)))')" = 100 ]

# Capture the exact SQL and parameters the server sends.
psql_ -c "alter system set log_min_duration_statement = 0" -c "select pg_reload_conf()" >/dev/null
sleep 0.5
: >"$dir/pg.log.mark"; start=$(wc -c <"$dir/pg.log")
curl -s "${hdr[@]}" "localhost:$port$pk_path" >/dev/null
curl -s "${hdr[@]}" "localhost:$port$embed_path" >/dev/null
sleep 0.5
psql_ -c "alter system reset log_min_duration_statement" -c "select pg_reload_conf()" >/dev/null
tail -c +"$((start + 1))" "$dir/pg.log" >"$dir/captured.log"
python3 bench/pgbench_script.py "$dir/captured.log" "$dir"   # writes pk.sql and embed.sql

wrk_rps() { wrk -t2 -c"$2" -d"${T}s" "${hdr[@]}" "http://127.0.0.1:$port$1" | awk '/Requests\/sec/ {print $2}'; }
# PGB: the pgbench command replaying a captured script with its parameters ($1: the script).
pgb_cmd() {
  local defs=() d
  mapfile -d '' -t defs < "$1.defs"
  PGB=(pgbench -n -M prepared -c 16 -j 2 -T "$T" -h "$sock" -p "$pgport" -U authenticator)
  for d in "${defs[@]}"; do PGB+=(-D "$d"); done
  PGB+=(-f "$1" postgres)
}
pgb_tps() { pgb_cmd "$1"; "${PGB[@]}" 2>/dev/null | awk '/^tps/ {print $3}'; }
