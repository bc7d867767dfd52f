#!/usr/bin/env bash
# /storage/v1 round 2 (issue #18): image transformations and resumable uploads.
#  1. in process, release build (crates/storage/examples/render_bench.rs): a photo-like
#     12-megapixel JPEG (4000×3000, q90) to a 200 px wide lossy WebP, cold (read, decode,
#     resize, encode, store; each run a new rendition) and cached (the disk cache's read),
#     and the peak RSS of the rendering process;
#  2. through the server ($BIN): the same over HTTP (/render/image/public, cold: quality
#     71..80, nothing cached; cached: the same URL again; curl's time per image, server RSS
#     peak), and a SIZE_MIB file uploaded plainly (one POST) and through TUS
#     (/upload/resumable: create, then PATCH 6 MiB chunks as Supabase's clients send them,
#     one curl per chunk).
# Usage: bench/storage_transform.sh   (SIZE_MIB=100 RUNS=10; BIN=… skips the server's
# release build, e.g. BIN=target/debug/agencyflow; RB=… the render_bench example's)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-100}
RUNS=${RUNS:-10}
CHUNK=$((6 * 1048576))
echo "uptime             : $(uptime)"
if [ -z "${RB:-}" ]; then
  cargo build --release --locked -q -p agencyflow-storage --example render_bench
  RB=./target/release/examples/render_bench
fi
src=$(mktemp --suffix=.jpg /tmp/agencyflow-photo-XXXX)
$RB photo "$src"
echo "== in process (release) =="
$RB "$src" "$RUNS"
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q -p agencyflow
  BIN=./target/release/agencyflow
fi
echo "== through the server ($BIN) =="; echo "uptime             : $(uptime)"
dir=$(mktemp -d /tmp/agencyflow-transform-XXXX); chmod 755 "$dir"
mv "$src" "$dir/photo.jpg"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
RUST_LOG=warn $BIN --data-dir "$dir" serve --port "$port" --quiet \
  --storage-file-size-limit $(( (SIZE_MIB + 1) * 1048576 )) >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -TERM $server; while kill -0 $server 2>/dev/null; do sleep 0.1; done; rm -rf "$dir"' EXIT
until curl -sf "localhost:$port/health" >/dev/null; do sleep 0.1; done
svc=$($BIN --data-dir "$dir" keys | awk '/^service_role/ {print $3}')
H=(-H "apikey: $svc" -H "Authorization: Bearer $svc")
base="localhost:$port/storage/v1"
curl -sf "${H[@]}" -H 'content-type: application/json' -d '{"name":"bench","public":true}' "$base/bucket" >/dev/null
curl -sf "${H[@]}" -H 'content-type: image/jpeg' --data-binary @"$dir/photo.jpg" "$base/object/bench/photo.jpg" >/dev/null
echo "source             : 4000×3000 JPEG, $(( $(stat -c %s "$dir/photo.jpg") / 1024 )) KiB"

stats() { python3 -c "import sys,statistics as s; v=sorted(float(x)*1000 for x in sys.argv[1:]); print(f'median {s.median(v):.1f} ms, min {v[0]:.1f}, max {v[-1]:.1f} (n={len(v)})')" "$@"; }
render() { curl -sf -o "$dir/out.webp" -D "$dir/headers" -w '%{time_total}' -H 'accept: image/webp' "$base/render/image/public/bench/photo.jpg?width=200&quality=$1"; }

sleep 1
idle_kb=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
( peak=0; while kill -0 $server 2>/dev/null; do r=$(awk '/VmRSS/ {print $2}' /proc/$server/status 2>/dev/null || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$dir/peak"; sleep 0.05; done ) &
sampler=$!
cold=()
for i in $(seq 1 "$RUNS"); do
  cold+=("$(render $((70 + i)))")
  grep -qi '^x-render-cache: miss' "$dir/headers" || { echo "run $i was not a miss"; exit 1; }
done
kill $sampler 2>/dev/null || true
peak_kb=$(cat "$dir/peak" 2>/dev/null || echo "$idle_kb")
file "$dir/out.webp" 2>/dev/null | sed 's/^.*: /output             : /' || true
echo "cold  (render)     : $(stats "${cold[@]}")"
cached=()
for _ in $(seq 1 $((RUNS * 5))); do
  cached+=("$(render $((70 + RUNS)))")
  grep -qi '^x-render-cache: hit' "$dir/headers" || { echo "not a cache hit"; exit 1; }
done
echo "cached (disk hit)  : $(stats "${cached[@]}")"
echo "server RSS         : idle $((idle_kb / 1024)) MiB, peak while rendering $((peak_kb / 1024)) MiB"

head -c $(( SIZE_MIB * 1048576 )) /dev/urandom >"$dir/src.bin"
mibs() { python3 -c "import sys; print(f'{$SIZE_MIB / float(sys.argv[1]):.0f} MiB/s ({float(sys.argv[1]):.2f} s)')" "$1"; }
up=$(curl -sf -o /dev/null -w '%{time_total}' "${H[@]}" -H 'content-type: application/octet-stream' \
  --data-binary @"$dir/src.bin" "$base/object/bench/plain.bin")
echo "plain upload (POST): $(mibs "$up")"
b64() { printf %s "$1" | base64 -w0; }
size=$(( SIZE_MIB * 1048576 ))
t0=$(date +%s.%N)
location=$(curl -sf -o /dev/null -D - "${H[@]}" -X POST -H 'tus-resumable: 1.0.0' -H "upload-length: $size" \
  -H "upload-metadata: bucketName $(b64 bench),objectName $(b64 tus.bin),contentType $(b64 application/octet-stream)" \
  "$base/upload/resumable" | awk 'tolower($1) == "location:" {print $2}' | tr -d '\r')
offset=0
while [ "$offset" -lt "$size" ]; do
  # (dd, not tail | head: under pipefail, tail's SIGPIPE would fail the pipeline)
  dd if="$dir/src.bin" bs=1M skip=$((offset / 1048576)) count=$((CHUNK / 1048576)) status=none |
    curl -sf -o /dev/null "${H[@]}" -X PATCH \
    -H 'tus-resumable: 1.0.0' -H "upload-offset: $offset" -H 'content-type: application/offset+octet-stream' \
    --data-binary @- "localhost:$port$location"
  offset=$(( offset + CHUNK < size ? offset + CHUNK : size ))
done
t1=$(date +%s.%N)
echo "TUS upload (6 MiB) : $(mibs "$(echo "$t1 - $t0" | bc)") in $(( (size + CHUNK - 1) / CHUNK )) PATCHes"
curl -sf -o "$dir/tus.out" "${H[@]}" "$base/object/bench/tus.bin"
cmp "$dir/src.bin" "$dir/tus.out" && echo "TUS round trip     : identical"
