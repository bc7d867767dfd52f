#!/usr/bin/env bash
# /rest/v1 throughput against the PostgreSQL ceiling (issue: /rest/v1), same machine,
# same concurrency, same run:
#   - the server: wrk, 16 connections, as an authenticated member (RLS on);
#   - the ceiling: pgbench, 16 clients, running the exact statements the server sent
#     (captured from the PostgreSQL log with their parameters), pipelined as the server
#     pipelines them: set_config(...); <statement>, under one Sync (one implicit transaction).
# Cases: GET one row by primary key; GET 100 rows with a one-level embed.
# Then the server's RSS while 64 connections hammer it.
# Usage: bench/rest.sh   (T=seconds per run, default 10)
set -euo pipefail
source "$(dirname "$0")/rest_setup.sh"
wrk_rps "$pk_path" 16 >/dev/null   # warm-up
echo "case,server_rps,pgbench_tps,ratio"
for c in pk embed; do
  path=$pk_path; [ $c = embed ] && path=$embed_path
  s=$(wrk_rps "$path" 16); p=$(pgb_tps "$dir/$c.sql")
  python3 -c "print('$c,%.0f,%.0f,%.2f' % ($s, $p, $s / $p))"
done
# RSS under 64 concurrent connections (sampled during the run), and idle.
idle=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
wrk -t2 -c64 -d"${T}s" "${hdr[@]}" "http://127.0.0.1:$port$embed_path" >/dev/null &
w=$!; peak=0
while kill -0 $w 2>/dev/null; do r=$(awk '/VmRSS/ {print $2}' /proc/$server/status); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.2; done
echo "server RSS: idle $((idle / 1024)) MiB, peak under 64 connections $((peak / 1024)) MiB"
