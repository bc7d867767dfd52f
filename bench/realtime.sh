#!/usr/bin/env bash
# /realtime/v1 (issue #19), release build, same machine (the load generator shares the cores):
#  1. postgres_changes: SOCKETS websockets over ORGS organizations (one member per org, its
#     sockets signed in as that member) subscribed to INSERTs on public.clients under RLS,
#     while RATE rows/s are inserted spread over the orgs: end-to-end latency from the
#     INSERT being sent to the message being read, deliveries against expected, leaks to
#     another org (must be 0), and PostgreSQL's CPU per insert with and without realtime;
#  2. broadcast fan-out: SOCKETS sockets on one topic, BRATE messages/s sent over 4 sockets;
#  3. IDLE sockets connected, each in a channel: the server's RSS.
# Usage: bench/realtime.sh   (SOCKETS=1000 ORGS=100 RATE=500 BRATE=100 IDLE=10000 SECS=20;
#        FILTER_ORG=1: each socket subscribes with filter org_id=eq.<its org>;
#        BIN=… / GEN=… skip the release builds of the server / the load generator)
set -euo pipefail
cd "$(dirname "$0")/.."
SOCKETS=${SOCKETS:-1000}; ORGS=${ORGS:-100}; RATE=${RATE:-500}; BRATE=${BRATE:-100}
IDLE=${IDLE:-10000}; SECS=${SECS:-20}
PHASES=${PHASES:-"changes broadcast idle"}   # which phases to run, in this order
has() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
ulimit -n "$(ulimit -Hn)"   # 10,000 sockets need as many descriptors on each side
if [ -z "${GEN:-}" ]; then
  cargo build --release --locked -q -p agencyflow-testkit --example realtime_bench
  GEN=./target/release/examples/realtime_bench
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p agencyflow
  BIN=./target/release/agencyflow
fi
echo "uptime: $(uptime)"
dir=$(mktemp -d /tmp/agencyflow-realtime-XXXX); chmod 755 "$dir"
# A known secret: the members' tokens are signed here (signing in 100 users from one address
# would meet the sign-in rate limit).
export JWT_SECRET=realtime-bench-secret-realtime-bench-secret
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $BIN --data-dir "$dir" serve --port "$port" --quiet >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
read -r sock pgport < <(awk 'NR==5{s=$1} NR==4{p=$1} END{print s, p}' "$dir/pg/postmaster.pid")
export PG_PID=$(head -1 "$dir/pg/postmaster.pid")   # the generator counts this cluster's CPU only
psql_() { psql -X -q -At -h "$sock" -p "$pgport" -U postgres -d postgres "$@"; }
anon=$($BIN --data-dir "$dir" keys | awk '/^anon/ {print $3}')
psql_ -v ON_ERROR_STOP=1 <<SQL >/dev/null
insert into public.organizations (id, name, slug)
select ('c0000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'RT Org ' || g, 'rt-org-' || g
from generate_series(1, $ORGS) g;
insert into auth.users (id, aud, role, email, encrypted_password, email_confirmed_at, raw_app_meta_data, raw_user_meta_data)
select ('c1000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'authenticated', 'authenticated',
       'rt-' || g || '@agencyflow.local', extensions.crypt('bench-password', extensions.gen_salt('bf', 4)), now(),
       json_build_object('provider', 'email', 'providers', json_build_array('email'),
         'invited_org_id', 'c0000000-0000-4000-8000-' || lpad(g::text, 12, '0'), 'invited_role', 'member')::jsonb, '{}'
from generate_series(1, $ORGS) g;
SQL
: >"$dir/tokens"
python3 - "$ORGS" "$JWT_SECRET" >"$dir/tokens" <<'PY'
import base64, hashlib, hmac, json, sys, time
orgs, secret = int(sys.argv[1]), sys.argv[2].encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
for g in range(1, orgs + 1):
    claims = {"sub": "c1000000-0000-4000-8000-%012d" % g, "role": "authenticated", "aud": "authenticated",
              "iat": now, "exp": now + 3600, "is_anonymous": False}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())
    print("c0000000-0000-4000-8000-%012d %s.%s" % (g, head, sig))
PY
ws="ws://127.0.0.1:$port"
pgconn="host=$sock port=$pgport user=postgres dbname=postgres"
rss() { awk '/VmRSS/ {print int($2 / 1024)}' /proc/$server/status; }
srv_cpu() { awk '{print ($14 + $15) / 100}' /proc/$server/stat; }

if has changes; then
echo "== postgres_changes: $SOCKETS sockets, $ORGS orgs, $RATE inserts/s, ${SECS} s"
c0=$(srv_cpu)
$GEN changes "$ws" "$anon" --sockets "$SOCKETS" --rate "$RATE" --secs "$SECS" --tokens "$dir/tokens" --pg "$pgconn" ${FILTER_ORG:+--filter-org}
echo "server: CPU $(python3 -c "print(round($(srv_cpu) - $c0, 1))") s over both phases, RSS $(rss) MiB"
curl -s -H "apikey: $($BIN --data-dir "$dir" keys | awk '/^service_role/ {print $3}')" \
  -H "Authorization: Bearer $($BIN --data-dir "$dir" keys | awk '/^service_role/ {print $3}')" \
  "localhost:$port/metrics" | grep -E '^agencyflow_realtime_(changes|authorization|dropped|slow)' || true
fi

if has broadcast; then
echo "== broadcast: $SOCKETS sockets, $BRATE messages/s, ${SECS} s"
$GEN broadcast "$ws" "$anon" --sockets "$SOCKETS" --rate "$BRATE" --secs "$SECS"
fi

if has idle; then
echo "== idle: $IDLE sockets"
before=$(rss)
$GEN idle "$ws" "$anon" --sockets "$IDLE" --hold 15 >"$dir/idle.out" 2>&1 &
gen=$!
until grep -q READY "$dir/idle.out" 2>/dev/null || ! kill -0 $gen 2>/dev/null; do sleep 0.5; done
sleep 5
echo "server RSS: $before MiB before, $(rss) MiB with $IDLE sockets connected and joined"
wait $gen
grep -v READY "$dir/idle.out"
fi
echo "uptime: $(uptime)"
