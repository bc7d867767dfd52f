#!/usr/bin/env bash
# Vector search (issue: /functions/v1): 100,000 x 768 synthetic vectors in documents'
# embedding shape, HNSW (vector_cosine_ops) as the schema builds it; recall@10 of the index
# against exact search, and p50/p95 latency of an indexed top-10 query.
# Usage: bench/vector.sh   (N=100000 DIM=768 Q=100 M=16 EFC=64 EFS="40 100 200"; needs numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}; DIM=${DIM:-768}; Q=${Q:-100}; M=${M:-16}; EFC=${EFC:-64}; EFS=${EFS:-"40 100 200"}
cargo build --release --locked -q -p agencyflow
bin=./target/release/agencyflow
dir=$(mktemp -d /tmp/agencyflow-vec-XXXX); chmod 755 "$dir"
$bin --data-dir "$dir" migrate >/dev/null 2>&1
# Keep the cluster up for the run: a server on a free port.
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $bin --data-dir "$dir" serve --port "$port" --ai-embed-worker false >/dev/null 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
read -r sock pgport < <(awk 'NR==5{s=$1} NR==4{p=$1} END{print s, p}' "$dir/pg/postmaster.pid")
psql_() { psql -X -q -At -h "$sock" -p "$pgport" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
# Synthetic embeddings with the structure of real ones (bench/vector_data.py, numpy),
# loaded with binary COPY.
python3 -c 'import numpy' 2>/dev/null || pip install -q numpy
python3 bench/vector_data.py "$N" "$DIM" "$Q" "$dir"
chmod 644 "$dir"/*.bin
psql_ <<SQL
set search_path = public, extensions;
create table vec_bench (id bigint primary key, embedding extensions.vector($DIM));
create table vec_queries (q bigint primary key, embedding extensions.vector($DIM));
copy vec_bench from '$dir/data.bin' with (format binary);
copy vec_queries from '$dir/queries.bin' with (format binary);
SQL
t0=$(date +%s)
psql_ -c "set maintenance_work_mem = '1GB'" -c "create index on vec_bench using hnsw (embedding extensions.vector_cosine_ops) with (m = $M, ef_construction = $EFC)"
echo "HNSW build (m=$M, ef_construction=$EFC) over $N x $DIM: $(( $(date +%s) - t0 )) s"
psql_ -c "set enable_indexscan = off" -c "create table vec_exact as select q.q, array(select b.id from vec_bench b order by b.embedding operator(extensions.<=>) q.embedding limit 10) ids from vec_queries q" \
      -c "analyze"
echo "data dir: $dir (socket $sock port $pgport)"
for efs in $EFS; do
  psql_ <<SQL
set search_path = public, extensions;
set hnsw.ef_search = $efs;
create temp table approx as
  select q.q, array(select b.id from vec_bench b order by b.embedding <=> q.embedding limit 10) ids from vec_queries q;
select 'ef_search=$efs recall@10=' || round(avg((select count(*) from unnest(a.ids) x where x = any (e.ids)) / 10.0), 4)
  from approx a join vec_exact e using (q);
SQL
  # Latency: each query alone, timed by EXPLAIN ANALYZE's execution time.
  psql_ -c "set hnsw.ef_search = $efs" -c "set search_path = public, extensions" -c "
    do \$\$ declare r record; t text; begin
      create temp table lat (ms float8);
      for r in select embedding from vec_queries loop
        for t in execute 'explain (analyze, format json) select id from vec_bench order by embedding <=> \$1 limit 10' using r.embedding loop
          insert into lat values (((t::json)->0->>'Execution Time')::float8);
        end loop;
      end loop;
    end \$\$;" -c "select 'ef_search=$efs p50_ms=' || round(percentile_cont(0.5) within group (order by ms)::numeric, 3) || ' p95_ms=' || round(percentile_cont(0.95) within group (order by ms)::numeric, 3) from lat"
done
