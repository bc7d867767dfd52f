#!/usr/bin/env bash
# /graphql/v1 against the equivalent /rest/v1 embed, same server, same run (issue #20):
# 100 clients ordered by name, each with its projects, every column of both, as an
# authenticated member (RLS on), wrk with 16 connections:
#   REST:    GET /rest/v1/clients?select=*,projects(*)&limit=100&order=name
#   GraphQL: POST /graphql/v1 { clientsCollection(first: 100, orderBy: [{name: AscNullsLast}])
#            { edges { node { <columns> projectsCollection { edges { node { <columns> } } } } } } }
# Then the compile time per operation (parse, validate, compile to SQL; no I/O) of that query,
# against the schema cache of the same database (crates/graphql/examples/compile_time.rs).
# Usage: bench/graphql.sh   (T=seconds per run, default 10)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=${T:-10}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
cargo build --release --locked -q -p agencyflow
cargo build --release --locked -q -p agencyflow-graphql --example compile_time
bin=./target/release/agencyflow
dir=$(mktemp -d /tmp/agencyflow-gql-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $bin --data-dir "$dir" serve --port "$port" >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
read -r sock pgport < <(awk 'NR==5{s=$1} NR==4{p=$1} END{print s, p}' "$dir/pg/postmaster.pid")
psql_() { psql -X -q -At -h "$sock" -p "$pgport" -U postgres -d postgres "$@"; }
$bin --data-dir "$dir" seed --demo >/dev/null 2>&1
psql_ -v ON_ERROR_STOP=1 -f bench/scale.sql >/dev/null
# Pages of 100 need max_rows 100 (pg_graphql's default page size is 30).
psql_ -c "comment on table public.clients is e'@graphql({\"totalCount\": {\"enabled\": true}, \"aggregate\": {\"enabled\": true}, \"max_rows\": 100})'"
anon=$($bin --data-dir "$dir" keys | awk '/^anon/ {print $3}')
token=$(curl -s -X POST "localhost:$port/auth/v1/token?grant_type=password" -H "apikey: $anon" -H 'content-type: application/json' \
  -d '{"email":"bench-member@agencyflow.local","password":"bench-password"}' | python3 -c 'import sys,json;print(json.load(sys.stdin)["access_token"])')
hdr=(-H "apikey: $anon" -H "Authorization: Bearer $token")
cols() { psql_ -c "select string_agg(column_name, ' ' order by ordinal_position) from information_schema.columns where table_schema = 'public' and table_name = '$1' and data_type <> 'USER-DEFINED'"; }
query="{ clientsCollection(first: 100, orderBy: [{name: AscNullsLast}]) { edges { node { $(cols clients) projectsCollection { edges { node { $(cols projects) } } } } } } }"
body=$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1]}))' "$query")
rest_path="/rest/v1/clients?select=*,projects(*)&limit=100&order=name"
# Both answer 100 clients with their projects (and the reload of the comment has happened).
for _ in $(seq 50); do
  n=$(curl -s "${hdr[@]}" -H 'content-type: application/json' -d "$body" "localhost:$port/graphql/v1" \
    | python3 -c 'import sys,json;d=json.load(sys.stdin);print(len((d.get("data") or {}).get("clientsCollection",{}).get("edges",[])))')
  [ "$n" = 100 ] && break; sleep 0.2
done
[ "$n" = 100 ]
[ "$(curl -s "${hdr[@]}" "localhost:$port$rest_path" | python3 -c 'import sys,json;print(len(json.load(sys.stdin)))')" = 100 ]
lua="$dir/post.lua"
python3 - "$body" "$lua" <<'PY'
import json, sys
body, path = sys.argv[1], sys.argv[2]
open(path, "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = %s\n' % json.dumps(body))
PY
wrk_rps() { wrk -t2 -c16 -d"${T}s" "${hdr[@]}" "$@" | awk '/Requests\/sec/ {print $2}'; }
wrk_rps "http://127.0.0.1:$port$rest_path" >/dev/null   # warm-up
wrk_rps -s "$lua" "http://127.0.0.1:$port/graphql/v1" >/dev/null
echo "case,rest_rps,graphql_rps,ratio"
r=$(wrk_rps "http://127.0.0.1:$port$rest_path"); g=$(wrk_rps -s "$lua" "http://127.0.0.1:$port/graphql/v1")
python3 -c "print('100 clients + projects,%.0f,%.0f,%.2f' % ($r, $g, $g / $r))"
# One request at a time: latency of each (median of wrk's single-connection run).
lat() { wrk -t1 -c1 -d"${T}s" --latency "${hdr[@]}" "$@" | awk '/ 50%/ {print $2}'; }
echo "median latency, 1 connection: rest $(lat "http://127.0.0.1:$port$rest_path"), graphql $(lat -s "$lua" "http://127.0.0.1:$port/graphql/v1")"
# Compile time: the schema cache as the server loads it ($1 = the exposed schemas).
sed "s/\$1::text\[\]/ARRAY['public','graphql_public']::text[]/g" crates/rest/src/schema/catalog.sql >"$dir/catalog.sql"
psql_ -f "$dir/catalog.sql" >"$dir/catalog.json"
printf '%s' "$query" >"$dir/query.graphql"
./target/release/examples/compile_time "$dir/catalog.json" authenticated "$dir/query.graphql" 20000
