#!/usr/bin/env bash
# RLS cost (issue: the agency schema): a member's `select * from clients where status =
# 'client' limit 50` against the same query as service_role, with pgbench on the demo data
# scaled to 100 orgs x 1,000 clients. Both run the exact per-request shape the server
# sends: BEGIN, set_config(role, claims), the query, COMMIT, pipelined.
# Usage: bench/rls.sh   (starts its own embedded cluster in a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p agencyflow
bin=./target/release/agencyflow
dir=$(mktemp -d /tmp/agencyflow-rls-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$bin --data-dir "$dir" serve --port "$port" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
read -r sock pgport < <(awk 'NR==5{s=$1} NR==4{p=$1} END{print s, p}' "$dir/pg/postmaster.pid")
psql_() { psql -X -q -h "$sock" -p "$pgport" -U postgres -d postgres "$@"; }
$bin --data-dir "$dir" seed --demo >/dev/null 2>&1
psql_ -v ON_ERROR_STOP=1 -f bench/scale.sql
member=b1000000-0000-4000-8000-000000000001
cat >"$dir/member.sql" <<SQL
\startpipeline
begin isolation level read committed read only;
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', '{"sub":"$member","role":"authenticated","aud":"authenticated"}', true);
select * from public.clients where status = 'client' limit 50;
commit;
\endpipeline
SQL
sed -e "s/'authenticated', true), set_config('request.jwt.claims', '[^']*'/'service_role', true), set_config('request.jwt.claims', '{\"role\":\"service_role\"}'/" "$dir/member.sql" >"$dir/service.sql"
for who in member service_role; do
  echo "== EXPLAIN ANALYZE as $who"
  if [ $who = member ]; then setup="select set_config('role','authenticated',true), set_config('request.jwt.claims','{\"sub\":\"$member\",\"role\":\"authenticated\"}',true)";
  else setup="select set_config('role','service_role',true)"; fi
  psql_ <<SQL
begin;
$setup \g /dev/null
explain (analyze, costs off, timing off, summary on) select * from public.clients where status = 'client' limit 50;
rollback;
SQL
done
run() { pgbench -n -M prepared -c 16 -j 2 -T "${T:-15}" -h "$sock" -p "$pgport" -U authenticator -f "$1" postgres 2>/dev/null | awk '/^tps/ {print $3}'; }
# Warm up, then interleave to share machine noise.
run "$dir/member.sql" >/dev/null
m1=$(run "$dir/member.sql"); s1=$(run "$dir/service.sql"); m2=$(run "$dir/member.sql"); s2=$(run "$dir/service.sql")
python3 - "$m1" "$m2" "$s1" "$s2" <<'PY'
import sys
m1, m2, s1, s2 = map(float, sys.argv[1:])
m, s = (m1 + m2) / 2, (s1 + s2) / 2
print(f"member tps {m:.0f} (runs {m1:.0f}, {m2:.0f}); service_role tps {s:.0f} (runs {s1:.0f}, {s2:.0f})")
print(f"RLS cost: service_role/member = {s / m:.3f}x (target <= 1.2x)")
PY
