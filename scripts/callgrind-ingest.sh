#!/usr/bin/env bash
# Instructions per stored report, by server thread, under valgrind's callgrind.
#
# Instruction counts do not drift with the machine's speed, steal or the other core's load, so two
# builds can be compared by runs minutes or sessions apart (docs/performance.md, twenty-fourth
# session). Under valgrind the server's threads share one core and run ~50x slower, so batches
# differ from a native run's; compare builds under the same shape, not with native CPU figures.
#
#   scripts/callgrind-ingest.sh BIN_DIR [SHAPE] [IN_FLIGHT] [SECONDS]
#
# BIN_DIR holds release `runwarden` and `runwarden-bench` (debug info on: the release profile keeps
# it). SHAPE is `runwarden-bench load`'s (`stream:1000`, `unary`, `batch:1000`); defaults
# stream:1000, 4 in flight, 20 s. The server starts on a fresh SQLite file, takes 5 s of load to
# warm up, then its counters are zeroed, one load run is counted, and the stored rows are counted
# in the database. Output: instructions per report in all and per thread, and the callgrind files
# (`callgrind_annotate --inclusive=yes FILE` shows a thread's call tree).
set -euo pipefail

bin=${1:?usage: scripts/callgrind-ingest.sh BIN_DIR [SHAPE] [IN_FLIGHT] [SECONDS]}
shape=${2:-stream:1000}
in_flight=${3:-4}
seconds=${4:-20}
port=${PORT:-57111}
for tool in valgrind callgrind_control sqlite3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian: valgrind, sqlite3)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/runwarden-callgrind.XXXXXX)
RUNWARDEN_DATABASE_URL="sqlite://$dir/db.sqlite?mode=rwc" RUNWARDEN_LISTEN="127.0.0.1:$port" RUST_LOG=warn \
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg.out" \
  "$bin/runwarden" serve >"$dir/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 1
done
load() { "$bin/runwarden-bench" --ids v7 load --addr "127.0.0.1:$port" --shape "$shape" --in-flight "$in_flight" "$@"; }
rows() { sqlite3 "$dir/db.sqlite" 'select count(*) from executions'; }

load --seconds 5 >"$dir/warm-up.txt" 2>&1
before=$(rows)
callgrind_control -z "$server" >/dev/null
load --seconds "$seconds" >"$dir/load.txt" 2>&1
callgrind_control -d "$server" >/dev/null
reports=$(($(rows) - before))

# The dump after zeroing is part 1, one file per thread: cg.out.1-NN.
total=0
for file in "$dir"/cg.out.1-*; do
  ir=$(awk '/^totals:/ {print $2; exit}' "$file")
  total=$((total + ir))
  # A thread's name is not in the file; the first of these in its call tree tells it.
  callgrind_annotate --inclusive=yes "$file" >"$file.tree" 2>/dev/null || true
  case $(grep -m1 -oE 'store::ingest::(plan|commit)|sqlx-sqlite[^/]*/src/connection/worker.rs|multi_thread::worker' \
    "$file.tree" || true) in
    store::ingest::plan) what=planner ;;
    store::ingest::commit) what=writer ;;
    sqlx-sqlite*) what="SQLite connection" ;;
    multi_thread::worker) what="tokio worker (requests)" ;;
    *) what=other ;;
  esac
  [ "$ir" -gt 0 ] && printf '%-40s %12d instructions, %8d per report\n' "$what ($(basename "$file"))" "$ir" $((ir / reports))
done
echo "$shape, $in_flight in flight: $reports reports stored, $((total / reports)) instructions per report (files in $dir)"
