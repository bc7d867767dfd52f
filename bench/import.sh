#!/usr/bin/env bash
# `agencyflow import supabase` at scale (docs/import.md): the test fixture shaped like the
# original project (crates/testkit/src/import_fixture.sql) scaled with fx_scale(ROWS/4)
# (clients, projects, tasks, invoices: ROWS rows more) and FILES storage objects of 2 KiB in
# a folder, imported into a fresh data directory. Prints wall time and peak RSS of the import.
# Usage: bench/import.sh   (ROWS=100000 FILES=10000; BIN=target/debug/agencyflow skips the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-100000}
FILES=${FILES:-10000}
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p agencyflow
  BIN=./target/release/agencyflow
fi
export RUST_LOG=warn
dir=$(mktemp -d /tmp/agencyflow-import-XXXX); chmod 755 "$dir"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
$BIN --data-dir "$dir/af" serve --port "$port" --ai-embed-worker false >"$dir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null 2>&1; do sleep 0.05; done
read -r pgport sock < <(sed -n '4p;5p' "$dir/af/pg/postmaster.pid" | paste -sd' ')
psql() { command psql -X -q -h "$sock" -p "$pgport" -U postgres -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c 'create database origin'
psql -d origin -f crates/testkit/src/import_fixture.sql >/dev/null
psql -d origin -c "select fx_scale($ROWS / 4)" >/dev/null
org=$(psql -d origin -Atc "select fx('org-a')")
psql -d origin -c "insert into storage.objects (bucket_id, name, owner, metadata)
  select 'documents', '$org/bench/f-' || i || '.bin', fx('owner-a'), '{\"size\": 2048, \"mimetype\": \"application/octet-stream\"}'
  from generate_series(1, $FILES) i" >/dev/null
python3 - "$dir/files/documents/$org/bench" "$FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(1, n + 1):
    with open(f"{d}/f-{i}.bin", "wb") as f:
        f.write(os.urandom(2048))
EOF
# The fixture's own two files.
mkdir -p "$dir/files/documents/$org" "$dir/files/avatars/$(psql -d origin -Atc "select fx('owner-a')")/me.png"
printf '%%PDF-1.4 the original'"'"'s brief' >"$dir/files/documents/$org/Briefs.pdf"
printf '\x89PNG\r\n\x1a\n' >"$dir/files/avatars/$(psql -d origin -Atc "select fx('owner-a')")/me.png/v7"
rows=$(psql -d origin -Atc "select (select count(*) from clients) + (select count(*) from projects) + (select count(*) from tasks) + (select count(*) from invoices)")
echo "origin: $rows rows in clients/projects/tasks/invoices, $FILES extra files"
/usr/bin/time -f '%e s wall, %M KiB peak RSS' \
  $BIN --data-dir "$dir/af" import supabase --from "host=$sock port=$pgport user=postgres dbname=origin" \
    --storage-from "$dir/files" --report "$dir/report.json" 2>"$dir/import.err" >"$dir/import.out" || { cat "$dir/import.err"; tail -20 "$dir/import.out"; exit 1; }
tail -1 "$dir/import.err"
tail -1 "$dir/import.out"
python3 -c "import json,sys; r=json.load(open('$dir/report.json')); print('imported rows:', sum(t['imported'] for t in r['tables']), 'files copied:', r['files']['copied'], 'refused:', r['refused_total'])"
