#!/usr/bin/env bash
# Where the CPU of one /rest/v1 request goes, and the best PK-read ratio this machine allows.
# Same setup as bench/rest.sh. Three runs of T seconds, 16 connections each:
#   1. GET /rest/v1/no_such_table: answered from the schema cache (404 PGRST205), so it is
#      HTTP, routing, JWT and the REST parser only: no PostgreSQL at all;
#   2. GET one client by primary key through the server (as bench/rest.sh);
#   3. pgbench replaying the exact statements of 2 (the ceiling of bench/rest.sh).
# For each: CPU microseconds per request of the server, of PostgreSQL and of the load
# generator. PostgreSQL's share is the machine's busy time minus the other two (measured per
# process), so it includes every backend, even ones that came and went.
# The bound: with a database client that cost the server nothing, one PK read would still
# need the load generator's and the server's share of run 1 plus PostgreSQL's share of run 3;
# 2 cores divided by that is the most this machine can serve, and its ratio to the pgbench
# ceiling is the best achievable ratio.
# Usage: bench/rest_cpu.sh   (T=seconds per run, default 10)
set -euo pipefail
command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null   # perf stat (task-clock)
source "$(dirname "$0")/rest_setup.sh"
hz=$(getconf CLK_TCK); cores=$(nproc)
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# task-clock of a command in ms, as perf stat reports it (CSV), after the command's own output.
cpu_ms() { perf stat -x, -e task-clock -o "$dir/perf.csv" -- "$@"; awk -F, '/task-clock/ {print $1}' "$dir/perf.csv"; }
run() { # label, then the load command; prints label,count,server_us,postgres_us,generator_us
  local label=$1; shift
  local b0 s0 b1 s1 out gen n
  b0=$(busy); s0=$(ticks "$server")
  out=$(cpu_ms "$@" 2>&1)
  b1=$(busy); s1=$(ticks "$server")
  gen=$(echo "$out" | tail -1)
  n=$(echo "$out" | awk '/requests in/ {print $1} /transactions actually processed/ {split($NF, a, "/"); print a[1]}')
  python3 -c "
n, hz = $n, $hz
server = ($s1 - $s0) / hz; total = ($b1 - $b0) / hz; gen = $gen / 1000
print('%s,%d,%.1f,%.1f,%.1f' % ('$label', n, server / n * 1e6, max(total - server - gen, 0) / n * 1e6, gen / n * 1e6))"
}
wrk_cmd=(wrk -t2 -c16 -d"${T}s" "${hdr[@]}")
"${wrk_cmd[@]}" "http://127.0.0.1:$port$pk_path" >/dev/null   # warm-up
echo "case,requests,server_us,postgres_us,generator_us"
nodb=$(run no_database "${wrk_cmd[@]}" "http://127.0.0.1:$port/rest/v1/no_such_table"); echo "$nodb"
pk=$(run pk_server "${wrk_cmd[@]}" "http://127.0.0.1:$port$pk_path"); echo "$pk"
pgb_cmd "$dir/pk.sql"
pgb=$(run pk_pgbench "${PGB[@]}"); echo "$pgb"
python3 - "$nodb" "$pk" "$pgb" "$cores" "$T" <<'PY'
import sys
nodb, pk, pgb = (l.split(",") for l in sys.argv[1:4])
cores, t = int(sys.argv[4]), float(sys.argv[5])
floor = float(nodb[2]) + float(nodb[4]) + float(pgb[3])
best = cores * 1e6 / floor
ceiling = int(pgb[1]) / t
served = int(pk[1]) / t
print(f"PK read: served {served:.0f}/s, ceiling {ceiling:.0f}/s, ratio {served / ceiling:.2f}")
print(f"floor per PK read with a free database client: {nodb[2]} (server, no database) + "
      f"{nodb[4]} (load generator) + {pgb[3]} (PostgreSQL) = {floor:.1f} us "
      f"-> at most {best:.0f}/s on {cores} cores = {best / ceiling:.2f}x the ceiling")
PY
