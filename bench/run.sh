#!/usr/bin/env bash
# The benchmark suite of issue 7, in one run, side by side on the same disk:
# RocksDB's own durable-write limit (db_bench fillrandom --sync=1), a fresh
# reeld driven by reel-bench, and a single-node etcd (Debian's, default
# durability) driven by the same reel-bench client; issue 20's sink rows
# (bench/sink_bench.py: reel-sink to a local receiver and to nats-server,
# beside the WAL tail's own rate); issue 21's push latency
# (bench/reactor_bench.py: reel-reactor to a worker that claims the run);
# and issue 24's cost of metrics (bench/metrics_bench.py: set@64 with
# /metrics served and scraped, and without, alternating).
#
#   bench/run.sh                  # the full suite (well under 15 minutes)
#   BENCH_QUICK=1 bench/run.sh    # 1 s per point, tiny sizes: to try the script
#   BENCH_ONLY=sequential bench/run.sh   # db_bench@1 and the sequential
#                                 # section alone, into bench/results/sequential/;
#                                 # prints its report section
#   BENCH_ONLY=workspace bench/run.sh    # the workspace section alone (dd,
#                                 # reel, NATS's Object Store), into
#                                 # bench/results/workspace/; prints its section
#   BENCH_ONLY=security bench/run.sh     # plaintext against TLS + token,
#                                 # into bench/results/security/; prints its section
#
# On a fresh Debian bookworm machine it installs what is missing (apt-get, as
# root or through sudo), builds with Bazel (-c opt), and writes:
#   bench/results/*.json          what reel-bench measured (one file per bench)
#   bench/results/db_bench-T.txt  db_bench's output at T threads (and
#                                 db_bench-T.cpu.json, the CPU it used)
#   bench/results/commands.txt    every command run, in order
#   bench/results/machine.json    the machine, the versions, the commit
#   bench/RESULTS.md, bench/throughput.png   (bench/report.py)
# All servers run on one temporary directory under bench/ (the repository's
# disk), removed at exit together with every server this script started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
RESULTS="$BENCH/results"
COMMANDS="$RESULTS/commands.txt"
PY=/usr/bin/python3
QUICK="${BENCH_QUICK:-0}"
[ "$QUICK" = 1 ] || QUICK=0
ONLY="${BENCH_ONLY:-}"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
case "$ONLY" in
  "" | sequential | workspace | security) ;;
  *) die "BENCH_ONLY=$ONLY: the sections that run alone are \"sequential\", \"workspace\" and \"security\"" ;;
esac
# a section run alone keeps its results apart from the full run's
if [ -n "$ONLY" ]; then
  RESULTS="$BENCH/results/$ONLY"
  COMMANDS="$RESULTS/commands.txt"
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# --- cleanup: every server this script starts, the run directory ---------------
RUN=""
RESTART_SYSTEM_ETCD=""
SERVER_PIDS=()
STEP_PID=""
FAILED=()

stop_pid() { # PID NAME: SIGTERM, then SIGKILL after 10 s
  local pid="$1" name="$2" i
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  set +e
  trap - EXIT INT TERM
  if [ -n "$STEP_PID" ]; then
    stop_pid "$STEP_PID" "the running step"
  fi
  for pid in "${SERVER_PIDS[@]}"; do
    stop_pid "$pid" "server"
  done
  if [ -n "$RUN" ]; then rm -rf "$RUN"; fi
  if [ -n "$RESTART_SYSTEM_ETCD" ]; then
    log "starting the system's etcd again ($RESTART_SYSTEM_ETCD)"
    # shellcheck disable=SC2086 # a command line of fixed words
    as_root $RESTART_SYSTEM_ETCD >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. what the suite needs: the project's own deps, then the peers -------
log "checking the project's packages (scripts/deps.sh)"
bash "$ROOT/scripts/deps.sh"

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]; }

etcd_preinstalled=0
if installed etcd-server; then etcd_preinstalled=1; fi

# git: bench/report.py records the commit (machine.json, RESULTS.md) with it
PEERS=(etcd-server etcd-client rocksdb-tools gnuplot-nox git)
missing=()
for p in "${PEERS[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The etcd-server package starts its own etcd (systemd's etcd.service, or the
# init.d script where there is no systemd, e.g. in a container). None must run
# beside the one measured here: stop it for the run; start it again at exit
# only if it was running before this script installed anything.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  if systemctl is-active --quiet etcd.service; then
    log "stopping etcd.service (the etcd-server package's own etcd) for the run"
    as_root systemctl stop etcd.service
    if [ "$etcd_preinstalled" = 1 ]; then RESTART_SYSTEM_ETCD="systemctl start etcd.service"; fi
  fi
elif [ -x /etc/init.d/etcd ] && /etc/init.d/etcd status >/dev/null 2>&1; then
  log "stopping /etc/init.d/etcd (the etcd-server package's own etcd) for the run"
  as_root /etc/init.d/etcd stop >&2 || true
  if [ "$etcd_preinstalled" = 1 ]; then RESTART_SYSTEM_ETCD="/etc/init.d/etcd start"; fi
fi

# --- 2. build ----------------------------------------------------------------
cd "$ROOT"
log "building (bazel build -c opt)"
bazel build -c opt //api:reeld //cli:reelctl //bench:reel-bench //sink:reel-sink \
  //bench:sink-receiver //reactor:reel-reactor >&2
BIN="$(bazel info -c opt bazel-bin 2>/dev/null)"
REELD="$BIN/api/reeld"
REELCTL="$BIN/cli/reelctl"
REELBENCH="$BIN/bench/reel-bench"
REELSINK="$BIN/sink/reel-sink"
SINKRECEIVER="$BIN/bench/sink-receiver"
REELREACTOR="$BIN/reactor/reel-reactor"
for b in "$REELD" "$REELCTL" "$REELBENCH" "$REELSINK" "$SINKRECEIVER" "$REELREACTOR"; do
  [ -x "$b" ] || die "not built: $b"
done
for b in db_bench etcd etcdctl nats-server; do
  command -v "$b" >/dev/null 2>&1 || die "$b not found (is its package installed?)"
done
RUN="$(mktemp -d "$BENCH/.run.XXXXXX")"

forget_pid() { # PID: no longer ours to stop at exit
  local kept=() p
  for p in "${SERVER_PIDS[@]}"; do
    [ "$p" = "$1" ] || kept+=("$p")
  done
  SERVER_PIDS=("${kept[@]+"${kept[@]}"}")
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# commands.txt names paths relative to the repository root, and the binaries
# by where Bazel puts them, so that it reads the same on any machine.
# shellcheck disable=SC2016 # shown as is, not expanded
BIN_SHOWN='$(bazel info -c opt bazel-bin)'
record() { # [--bg] [--out FILE] CMD...: appends a command line to commands.txt
  local suffix="" line w
  if [ "$1" = "--bg" ]; then suffix=" &"; shift; fi
  if [ "$1" = "--out" ]; then suffix=" > ${2#"$ROOT/"}"; shift 2; fi
  line=""
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then line+=" $w"; else line+=" $(printf '%q' "$w")"; fi
  done
  line="${line# }"
  line="${line//"$BIN"/"$BIN_SHOWN"}"
  line="${line//"$ROOT/"/}"
  printf '%s%s\n' "$line" "$suffix" >>"$COMMANDS"
}
note() { # TEXT...: a comment line, its paths relative to the root as record's
  local line="$*"
  line="${line//"$BIN"/"$BIN_SHOWN"}"
  printf '# %s\n' "${line//"$ROOT/"/}" >>"$COMMANDS"
}

# cpu_ticks: "BUSY TOTAL", the machine's CPU ticks so far (busy: all but
# idle and iowait)
cpu_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

# cpu_mark: STEP_MARK="CHILD_CPU_S BUSY_TICKS TOTAL_TICKS": the CPU this
# shell's waited-for children used so far (the builtin `times`, run in this
# shell, not a subshell) and cpu_ticks
cpu_mark() {
  times >"$RUN/.times"
  STEP_MARK="$(awk 'function s(x, m) { sub(",", ".", x); split(x, m, /[ms]/); return m[1] * 60 + m[2] }
    NR == 2 { c = s($1) + s($2) } END { printf "%.3f", c }' "$RUN/.times") $(cpu_ticks)"
}

# step NAME LIMIT_S [--out FILE] CMD...: runs CMD under a time limit, once
# the machine is idle (settle); a failure is noted (commands.txt, the final
# exit status) and the run goes on. Sets STEP_CPU_S (the CPU its processes
# used) and STEP_BUSY_PCT (how busy the machine was meanwhile), and notes
# both.
step() {
  local name="$1" limit="$2" out="" rc=0 t0 m0
  shift 2
  if [ "$1" = "--out" ]; then out="$2"; shift 2; fi
  settle
  cpu_mark
  m0="$STEP_MARK"
  t0=$SECONDS
  log "[$(date +%T)] $name"
  if [ -n "$out" ]; then
    record --out "$out" "$@"
    timeout -k 10 "$limit" "$@" >"$out" 2>"$RUN/$name.err" &
  else
    record "$@"
    timeout -k 10 "$limit" "$@" &
  fi
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  cpu_mark
  read -r STEP_CPU_S STEP_BUSY_PCT < <(echo "$m0 $STEP_MARK" | awk '{
    printf "%.3f %.1f\n", $4 - $1, ($6 > $3) ? 100 * ($5 - $2) / ($6 - $3) : 0 }')
  note "${STEP_CPU_S} s of CPU in the step's processes; the machine ${STEP_BUSY_PCT}% busy meanwhile"
  if [ "$rc" -ne 0 ]; then
    local why="exit $rc"
    [ "$rc" -eq 124 ] && why="timed out after ${limit} s"
    log "$name FAILED ($why); going on with the rest"
    note "^ FAILED: $why"
    FAILED+=("$name")
  else
    log "$name: done in $((SECONDS - t0)) s"
  fi
}

# settle: waits (up to 60 s) until the machine is idle, the cores busy
# under 10% over one second, so a step does not measure what a step before
# left running (a server's backlog, RocksDB's or etcd's compactions).
settle() {
  local i b0 t0 b1 t1 busy total
  for ((i = 0; i < 60; i++)); do
    read -r b0 t0 < <(cpu_ticks)
    sleep 1
    read -r b1 t1 < <(cpu_ticks)
    busy=$((b1 - b0)) total=$((t1 - t0))
    if [ $((busy * 10)) -lt "$total" ]; then
      log "settled: ${busy} busy of ${total} ticks after $((i + 1)) s"
      note "idle after $((i + 1)) s (${busy} of ${total} CPU ticks busy over the last second)"
      return 0
    fi
  done
  log "not settled after 60 s (${busy} busy of ${total} ticks); going on"
  note "not idle after 60 s (${busy} of ${total} CPU ticks busy over the last second); went on"
}

skip() { # NAME WHY: a step that cannot run
  log "$1 SKIPPED: $2"
  note "$1 not run: $2"
  FAILED+=("$1")
}

# start_reeld NAME DATA_DIR ADDR: sets REELD_PID; succeeds once reeld answers
# SERVING (reelctl health), fails after 10 s
start_reeld() {
  local name="$1" dir="$2" addr="$3" i
  # REELD_EXTRA: more flags for reeld; HEALTH_EXTRA: for reelctl health
  record --bg "$REELD" --data-dir "$dir" --listen "$addr" ${REELD_EXTRA[@]+"${REELD_EXTRA[@]}"}
  "$REELD" --data-dir "$dir" --listen "$addr" ${REELD_EXTRA[@]+"${REELD_EXTRA[@]}"} \
    >"$RUN/$name.log" 2>&1 &
  REELD_PID=$!
  SERVER_PIDS+=("$REELD_PID")
  for ((i = 0; i < 100; i++)); do
    if "$REELCTL" --addr "$addr" --timeout 1s ${HEALTH_EXTRA[@]+"${HEALTH_EXTRA[@]}"} \
      health >/dev/null 2>&1; then
      log "$name serving on $addr (pid $REELD_PID)"
      return 0
    fi
    kill -0 "$REELD_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not serve on $addr within 10 s; its log:"
  tail -n 20 "$RUN/$name.log" >&2 || true
  note "^ FAILED: not serving within 10 s"
  return 1
}

# start_etcd NAME DATA_DIR: sets ETCD_PID and ETCD_ADDR; succeeds once
# etcdctl endpoint health does, fails after 10 s
start_etcd() {
  local name="$1" dir="$2" port peer i
  port="$(free_port)"
  peer="$(free_port)"
  while [ "$peer" = "$port" ]; do peer="$(free_port)"; done
  ETCD_ADDR="127.0.0.1:$port"
  local args=(--name "$name" --data-dir "$dir"
    --listen-client-urls "http://$ETCD_ADDR" --advertise-client-urls "http://$ETCD_ADDR"
    --listen-peer-urls "http://127.0.0.1:$peer"
    --initial-advertise-peer-urls "http://127.0.0.1:$peer"
    --initial-cluster "$name=http://127.0.0.1:$peer")
  record --bg etcd "${args[@]}"
  etcd "${args[@]}" >"$RUN/$name.log" 2>&1 &
  ETCD_PID=$!
  SERVER_PIDS+=("$ETCD_PID")
  for ((i = 0; i < 100; i++)); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ADDR" --command-timeout=1s \
      endpoint health >/dev/null 2>&1; then
      log "$name serving on $ETCD_ADDR (pid $ETCD_PID)"
      record env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ADDR" endpoint health
      return 0
    fi
    kill -0 "$ETCD_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "$name did not become healthy on $ETCD_ADDR within 10 s; its log:"
  tail -n 20 "$RUN/$name.log" >&2 || true
  note "^ FAILED: not healthy within 10 s"
  return 1
}

# --- parameters ---------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  log "BENCH_QUICK=1: 1 s per point, tiny sizes (figures are not meaningful)"
  D_WRITE=1 D_WATCH=1 D_SIGNAL=1 D_DBBENCH=1 D_SEC=1 SEC_ROUNDS=1
  WATCHERS=1,100 SIZE=20000 WATCHERS_SHARED=100
  MEMORY_SIZES=(--idle-watchers 1000 --writes 20000)
  SINK_SIZES=(--events 20000 --ordered-events 5000 --latency-seconds 2)
  REACTOR_SIZES=(--runs 200)
  WS_SIZES=1,64 WS_BIG=64
else
  D_WRITE=10 D_WATCH=5 D_SIGNAL=10 D_DBBENCH=10 D_SEC=5 SEC_ROUNDS=3
  WATCHERS=1,100,1000,10000 SIZE=1000000 WATCHERS_SHARED=1000,10000
  MEMORY_SIZES=() # reel-bench's defaults: 10000 idle watchers; 100 stalled subscribers, 100000 writes
  SINK_SIZES=(--events 200000 --ordered-events 30000 --latency-seconds 10)
  REACTOR_SIZES=(--runs 2000)
  WS_SIZES=1,64,1024 WS_BIG=1024
fi
CONCURRENCY=1,8,64,256
SHARED=100 # watchers per stream in the shared-stream watch rows
VALUE_BYTES=256
DBBENCH_THREADS=(1 8 32)
[ "$ONLY" = sequential ] && DBBENCH_THREADS=(1)
IDLE_S=30
[ "$QUICK" = 1 ] && IDLE_S=3
GAP_COUNT=20000 # disk-gap: synced writes per pause
[ "$QUICK" = 1 ] && GAP_COUNT=500

mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/db_bench-*.txt "$COMMANDS"
if [ "$QUICK" = 1 ]; then
  note "bench/run.sh with BENCH_QUICK=1, started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
else
  note "bench/run.sh, started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
note "paths are relative to the repository root; bench/.run.* is the run's temporary directory"
record bazel build -c opt //api:reeld //cli:reelctl //bench:reel-bench //sink:reel-sink \
  //bench:sink-receiver

"$PY" "$BENCH/report.py" machine --run-dir "$RUN" --reeld "$REELD" \
  --reel-bench "$REELBENCH" --quick "$QUICK" --out "$RESULTS/machine.json"
log "run directory: $RUN ($(df -h --output=source,size,avail "$RUN" | tail -n 1 | tr -s ' '))"

# workspace (issue 22): artifacts on their own fresh reeld, beside the disk's
# own synced sequential write and read (dd) and NATS JetStream's Object Store
# (nats-server -js, driven by the `nats` npm client: bench/nats_objstore.js);
# KV set@8 alone and while a WS_BIG MiB upload runs; reeld's RSS while the
# largest artifact streams to a reader that pauses 20 ms per MiB.
#
# dd writes bytes that are not zeros, from a file read once before (so in
# the page cache): this VM's disk writes zeros faster than other bytes
# (measured 786 and 1,100 MB/s from /dev/zero against 612 and 592 MB/s
# from random bytes, alternating), and uploads are not zeros.
workspace_section() {
  head -c "$((WS_BIG << 20))" /dev/urandom >"$RUN/dd.src"
  cat "$RUN/dd.src" >/dev/null
  step dd-write 300 --out "$RESULTS/dd-write.txt" sh -c \
    "dd if='$RUN/dd.src' of='$RUN/dd.bin' bs=1M count=$WS_BIG conv=fdatasync 2>&1"
  rm -f "$RUN/dd.src"
  step dd-read 300 --out "$RESULTS/dd-read.txt" sh -c \
    "dd if='$RUN/dd.bin' of=/dev/null bs=1M iflag=direct 2>&1; rm -f '$RUN/dd.bin'"
  WS_ADDR="127.0.0.1:$(free_port)"
  if start_reeld reeld-ws "$RUN/reel-ws" "$WS_ADDR"; then
    step ws-reel 900 "$REELBENCH" ws --addr "$WS_ADDR" --pid "$REELD_PID" --sizes "$WS_SIZES" \
      --json "$RESULTS/ws-reel.json"
    step ws-kv-alone 120 "$REELBENCH" set --addr "$WS_ADDR" --concurrency 8 --duration "$D_WRITE" \
      --json "$RESULTS/ws-kv-alone.json"
    step ws-kv-upload 300 sh -c "'$REELBENCH' ws --addr '$WS_ADDR' --sizes $WS_BIG >'$RUN/ws-bg.txt' 2>&1 &
      sleep 0.5; '$REELBENCH' set --addr '$WS_ADDR' --concurrency 8 --duration $D_WRITE \
        --json '$RESULTS/ws-kv-upload.json'; wait"
  else
    skip ws-reel "its reeld is not serving"
  fi
  stop_pid "$REELD_PID" reeld-ws
  forget_pid "$REELD_PID"
  NATS_PORT="$(free_port)"
  if command -v npm >/dev/null 2>&1 && (cd "$RUN" && npm install --no-audit --no-fund --silent nats@2 >&2); then
    nats-server -js -p "$NATS_PORT" -sd "$RUN/nats-ws" >"$RUN/nats-ws.log" 2>&1 &
    NATS_PID=$!
    SERVER_PIDS+=("$NATS_PID")
    sleep 1
    step ws-nats 900 --out "$RESULTS/ws-nats.jsonl" env NODE_PATH="$RUN/node_modules" \
      node "$BENCH/nats_objstore.js" "nats://127.0.0.1:$NATS_PORT" "$WS_SIZES"
    stop_pid "$NATS_PID" nats-server
    forget_pid "$NATS_PID"
  else
    skip ws-nats "npm cannot install the nats client"
  fi
}

make_test_pki() { # DIR: ca.pem, server.pem, server.key (127.0.0.1)
  local d="$1"
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=reel bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -out "$d/server.pem" -days 2 -extfile "$d/server.ext" 2>/dev/null
}

# security (issue 23): set and get at 64 in flight on two fresh reelds, one
# plaintext without auth and one with TLS and token auth (a test CA made
# here; the token is the first admin token reeld writes into its data
# dir), alternating so that both see the same machine
security_section() {
  PLAIN_ADDR="127.0.0.1:$(free_port)"
  TLS_ADDR="127.0.0.1:$(free_port)"
  PKI="$RUN/pki"
  note "a test CA and a server certificate for 127.0.0.1 in $PKI (openssl, as docs/security.md shows)"
  if make_test_pki "$PKI" && start_reeld reeld-plain "$RUN/reel-plain" "$PLAIN_ADDR"; then
    PLAIN_PID=$REELD_PID
    REELD_EXTRA=(--auth token --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key")
    HEALTH_EXTRA=(--tls-ca "$PKI/ca.pem")
    tls_up=0
    start_reeld reeld-tls "$RUN/reel-tls" "$TLS_ADDR" && tls_up=1
    REELD_EXTRA=()
    HEALTH_EXTRA=()
    if [ "$tls_up" = 1 ]; then
      TLS_PID=$REELD_PID
      TOKEN="$(cat "$RUN/reel-tls/admin.token")"
      # SEC_ROUNDS rounds, each with the other reeld first, so the machine's
      # drift falls on both sides; report.py takes the medians.
      for i in $(seq 1 "$SEC_ROUNDS"); do
        sides="plain tls"
        [ $((i % 2)) = 0 ] && sides="tls plain"
        for b in set get; do
          for side in $sides; do
            if [ "$side" = plain ]; then
              step "$b-plain-reel-$i" 120 "$REELBENCH" "$b" --addr "$PLAIN_ADDR" --pid "$PLAIN_PID" \
                --duration "$D_SEC" --concurrency 64 --json "$RESULTS/$b-plain-reel-$i.json"
            else
              # The token goes by REEL_TOKEN, never on a command line.
              REEL_TOKEN="$TOKEN" step "$b-tls-reel-$i" 120 "$REELBENCH" "$b" --addr "$TLS_ADDR" \
                --pid "$TLS_PID" --tls-ca "$PKI/ca.pem" --duration "$D_SEC" --concurrency 64 \
                --json "$RESULTS/$b-tls-reel-$i.json"
            fi
          done
        done
      done
      stop_pid "$TLS_PID" reeld-tls
      forget_pid "$TLS_PID"
    else
      skip set-tls-reel "its reeld is not serving"
    fi
    stop_pid "$PLAIN_PID" reeld-plain
    forget_pid "$PLAIN_PID"
  else
    skip set-plain-reel "its reeld is not serving"
  fi
}

# A section run alone (BENCH_ONLY): its report section printed, then the end.
only_done() {
  record "$PY" bench/report.py "$ONLY" "bench/results/$ONLY"
  "$PY" "$BENCH/report.py" "$ONLY" "$RESULTS"
  [ ${#FAILED[@]} -eq 0 ] || die "failed steps: ${FAILED[*]}"
  exit 0
}

if [ "$ONLY" = security ]; then
  security_section
  only_done
fi
if [ "$ONLY" = workspace ]; then
  workspace_section
  only_done
fi

# --- 3. RocksDB's own limit: db_bench fillrandom --sync=1 -----------------------
for t in "${DBBENCH_THREADS[@]}"; do
  out="$RESULTS/db_bench-$t.txt"
  step "db_bench-$t" 120 --out "$out" \
    db_bench --benchmarks=fillrandom --sync=1 --disable_wal=0 \
    --value_size="$VALUE_BYTES" --key_size=32 --threads="$t" \
    --duration="$D_DBBENCH" --num=10000000 --db="$RUN/db_bench-$t"
  # db_bench's header (version, CPU) goes to stderr with its progress
  # counter: keep the header, drop the counter; paths relative to the root
  if [ -f "$RUN/db_bench-$t.err" ]; then
    { tr '\r' '\n' <"$RUN/db_bench-$t.err" | grep -v '^\.\.\. finished' | sed '/^ *$/d' || true
      cat "$out"; } | sed "s|$ROOT/||g" >"$out.tmp" && mv "$out.tmp" "$out"
  fi
  grep -E '^fillrandom +:' "$out" >&2 || true
  printf '{"cpu_s": %s, "machine_busy_pct": %s}\n' "$STEP_CPU_S" "$STEP_BUSY_PCT" \
    >"$RESULTS/db_bench-$t.cpu.json"
  rm -rf "$RUN/db_bench-$t"
done

# --- 3b. sequential (issue 19): one call in flight on a fresh reeld ----------
# Its idle CPU over IDLE_S seconds with no client, then get@1 (the floor's
# call that writes nothing), set@1 and @64 and append@1, each with reeld's
# CPU per op; the report sets them beside db_bench@1 from above.
proc_cpu_s() { # PID: utime + stime so far, in seconds (fields 14, 15)
  sed 's/^.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($12 + $13) / hz}'
}
SEQ_ADDR="127.0.0.1:$(free_port)"
if start_reeld reeld-seq "$RUN/reel-seq" "$SEQ_ADDR"; then
  SEQ_PID="$REELD_PID"
  settle
  log "[$(date +%T)] idle-reel: reeld's CPU over ${IDLE_S} s with no client"
  note "idle: reeld's utime + stime (/proc/$SEQ_PID/stat) before and after ${IDLE_S} s with no client"
  c0="$(proc_cpu_s "$SEQ_PID")"
  sleep "$IDLE_S"
  c1="$(proc_cpu_s "$SEQ_PID")"
  awk -v a="$c0" -v b="$c1" -v s="$IDLE_S" 'BEGIN { printf "{\"bench\": \"idle\", \"rows\": [{\"seconds\": %d, \"cpu_s\": %.3f, \"pct_of_core\": %.3f}]}\n", s, b - a, 100 * (b - a) / s }' \
    >"$RESULTS/seq-idle-reel.json"
  note "idle reeld: $(cat "$RESULTS/seq-idle-reel.json")"
  step seq-get-reel 120 "$REELBENCH" get --addr "$SEQ_ADDR" --pid "$SEQ_PID" --duration "$D_WRITE" \
    --concurrency 1 --json "$RESULTS/seq-get-reel.json"
  step seq-set-reel 120 "$REELBENCH" set --addr "$SEQ_ADDR" --pid "$SEQ_PID" --target reel \
    --duration "$D_WRITE" --concurrency 1,64 --value-bytes "$VALUE_BYTES" --json "$RESULTS/seq-set-reel.json"
  step seq-append-reel 120 "$REELBENCH" append --addr "$SEQ_ADDR" --pid "$SEQ_PID" \
    --duration "$D_WRITE" --concurrency 1 --value-bytes "$VALUE_BYTES" --json "$RESULTS/seq-append-reel.json"
  stop_pid "$SEQ_PID" reeld-seq
  forget_pid "$SEQ_PID"
else
  skip seq-set-reel "its reeld is not serving"
fi
# The disk alone, for a writer that pauses between its synced writes as a
# sequential client must: back to back, and with get@1's p50 between them
# (the least time the client's next write can take to arrive).
SEQ_GAP="$("$PY" -c 'import json, sys
print(round(json.load(open(sys.argv[1]))["rows"][0]["p50_us"]))' "$RESULTS/seq-get-reel.json" 2>/dev/null || true)"
if [ -n "$SEQ_GAP" ]; then
  step disk-gap 300 "$PY" "$BENCH/disk_gap.py" --dir "$RUN" --gap-us "0,$SEQ_GAP" \
    --count "$GAP_COUNT" --json "$RESULTS/disk-gap.json"
else
  skip disk-gap "no get@1 p50 to pause for"
fi
if [ "$ONLY" = sequential ]; then
  only_done
fi

# --- 4. the servers: a fresh reeld, a single-node etcd ---------------------------
REEL_ADDR="127.0.0.1:$(free_port)"
reel_up=0 etcd_up=0
if start_reeld reeld "$RUN/reel" "$REEL_ADDR"; then reel_up=1; fi
MAIN_REELD_PID="$REELD_PID"
if start_etcd etcd "$RUN/etcd"; then etcd_up=1; fi

# --- 5. the suite --------------------------------------------------------------
# reel_step / etcd_step NAME LIMIT_S CMD...: a step, if its server is up
reel_step() { if [ "$reel_up" = 1 ]; then step "$@"; else skip "$1" "reeld is not serving"; fi; }
etcd_step() { if [ "$etcd_up" = 1 ]; then step "$@"; else skip "$1" "etcd is not serving"; fi; }

reel_step set-reel 240 "$REELBENCH" set --addr "$REEL_ADDR" --pid "$MAIN_REELD_PID" --target reel --duration "$D_WRITE" \
  --concurrency "$CONCURRENCY" --value-bytes "$VALUE_BYTES" --json "$RESULTS/set-reel.json"
etcd_step set-etcd 240 "$REELBENCH" set --addr "$ETCD_ADDR" --pid "$ETCD_PID" --target etcd --duration "$D_WRITE" \
  --concurrency "$CONCURRENCY" --value-bytes "$VALUE_BYTES" --json "$RESULTS/set-etcd.json"
reel_step get-reel 240 "$REELBENCH" get --addr "$REEL_ADDR" --pid "$MAIN_REELD_PID" --duration "$D_WRITE" \
  --concurrency "$CONCURRENCY" --json "$RESULTS/get-reel.json"
reel_step append-reel 240 "$REELBENCH" append --addr "$REEL_ADDR" --pid "$MAIN_REELD_PID" --duration "$D_WRITE" \
  --concurrency "$CONCURRENCY" --value-bytes "$VALUE_BYTES" --json "$RESULTS/append-reel.json"
reel_step watch-reel 300 "$REELBENCH" watch --addr "$REEL_ADDR" --target reel --duration "$D_WATCH" \
  --watchers "$WATCHERS" --rate 1000 --json "$RESULTS/watch-reel.json"
reel_step watch-reel-batched 300 "$REELBENCH" watch --addr "$REEL_ADDR" --target reel --batched \
  --duration "$D_WATCH" --watchers "$WATCHERS" --rate 1000 --json "$RESULTS/watch-reel-batched.json"
etcd_step watch-etcd 300 "$REELBENCH" watch --addr "$ETCD_ADDR" --target etcd --duration "$D_WATCH" \
  --watchers "$WATCHERS" --rate 1000 --json "$RESULTS/watch-etcd.json"
# watchers sharing streams, SHARED to a stream: reel coalesces a change for
# them into one message; etcd multiplexes them on its Watch stream
reel_step watch-reel-shared 300 "$REELBENCH" watch --addr "$REEL_ADDR" --target reel --batched \
  --shared "$SHARED" --pattern-keys 0 --duration "$D_WATCH" --watchers "$WATCHERS_SHARED" --rate 1000 \
  --json "$RESULTS/watch-reel-shared.json"
etcd_step watch-etcd-shared 300 "$REELBENCH" watch --addr "$ETCD_ADDR" --target etcd \
  --shared "$SHARED" --pattern-keys 0 --duration "$D_WATCH" --watchers "$WATCHERS_SHARED" --rate 1000 \
  --json "$RESULTS/watch-etcd-shared.json"
reel_step signal-reel 120 "$REELBENCH" signal --addr "$REEL_ADDR" --duration "$D_SIGNAL" \
  --json "$RESULTS/signal-reel.json"
reel_step tail-reel 300 "$REELBENCH" tail --addr "$REEL_ADDR" --events "$SIZE" \
  --json "$RESULTS/tail-reel.json"

stop_pid "$ETCD_PID" etcd
forget_pid "$ETCD_PID"
stop_pid "$MAIN_REELD_PID" reeld
forget_pid "$MAIN_REELD_PID"

security_section

# memory: its own fresh reeld, so that the RSS is that of the test alone
MEM_ADDR="127.0.0.1:$(free_port)"
if start_reeld reeld-memory "$RUN/reel-memory" "$MEM_ADDR"; then
  step memory-reel 300 "$REELBENCH" memory --addr "$MEM_ADDR" --pid "$REELD_PID" \
    ${MEMORY_SIZES[@]+"${MEMORY_SIZES[@]}"} --json "$RESULTS/memory-reel.json"
else
  skip memory-reel "its reeld is not serving"
fi
stop_pid "$REELD_PID" reeld-memory
forget_pid "$REELD_PID"

# recovery and timers (issue 21): their own fresh reeld. Lease expiry to the
# run claimed by a waiting ClaimNextRun (p50/p99), 64 ClaimNextRun workers
# taking runs made claimable together (runs/s), and the lateness of
# delayed signals with TIMERS scheduled, due 5,000 a second, with reeld's
# RSS per scheduled timer
TIMERS_ADDR="127.0.0.1:$(free_port)"
if [ "$QUICK" = 1 ]; then TIMERS_N=5000 CLAIM_RUNS=2000; else TIMERS_N=100000 CLAIM_RUNS=20000; fi
if start_reeld reeld-timers "$RUN/reel-timers" "$TIMERS_ADDR"; then
  step recovery-reel 120 "$REELBENCH" recovery --addr "$TIMERS_ADDR" --duration "$D_SIGNAL" \
    --json "$RESULTS/recovery-reel.json"
  step dispatch-reel 300 "$REELBENCH" dispatch --addr "$TIMERS_ADDR" --workers 64 \
    --claim-runs "$CLAIM_RUNS" --json "$RESULTS/dispatch-reel.json"
  step timers-reel 300 "$REELBENCH" timers --addr "$TIMERS_ADDR" --pid "$REELD_PID" \
    --timers "$TIMERS_N" --rate 5000 --json "$RESULTS/timers-reel.json"
else
  skip recovery-reel "its reeld is not serving"
fi
stop_pid "$REELD_PID" reeld-timers
forget_pid "$REELD_PID"

# sinks: reel-sink on its own fresh reeld (sink_bench.py starts it, and a
# nats-server, and bench/sink_receiver.c): the WAL tail's own rate on the
# events it stores, then reel-sink delivering them ordered, 64 in flight,
# batched and to JetStream, and commit-to-receipt at 1,000 events/s
step sink-reel 900 "$PY" "$BENCH/sink_bench.py" --reeld "$REELD" --reel-sink "$REELSINK" \
  --receiver "$SINKRECEIVER" --reel-bench "$REELBENCH" --nats-server "$(command -v nats-server)" \
  --run-dir "$RUN" --json "$RESULTS/sink-reel.json" "${SINK_SIZES[@]}"

# reactor: reel-reactor's push path on its own fresh reeld (reactor_bench.py
# starts both and a worker that claims with ClaimRun): signal sent -> run
# claimed, p50/p99, at 100 runs/s
step reactor-reel 300 "$PY" "$BENCH/reactor_bench.py" --reeld "$REELD" \
  --reel-reactor "$REELREACTOR" --run-dir "$RUN" --json "$RESULTS/reactor-reel.json" \
  "${REACTOR_SIZES[@]}"

# metrics (issue 24): set@64 on a fresh reeld without metrics and on one
# with --metrics-listen scraped every second, alternating, 8 rounds each of
# 8 s (single pairs move by tens of percent on this machine: more pairs,
# not longer ones, steady the median)
step metrics-reel 600 "$PY" "$BENCH/metrics_bench.py" --reeld "$REELD" --reelctl "$REELCTL" \
  --reel-bench "$REELBENCH" --run-dir "$RUN" --rounds 8 --duration 8 \
  --json "$RESULTS/metrics-reel.json"

# restart: reel-bench loads, stops and restarts its own reeld on its own data
# dir (reeld's output goes wherever reel-bench sends it)
step restart-reel 480 "$REELBENCH" restart --reeld "$REELD" --data-dir "$RUN/reel-restart" \
  --addr "127.0.0.1:$(free_port)" --keys "$SIZE" --entries "$SIZE" \
  --json "$RESULTS/restart-reel.json"

workspace_section

# --- 6. the report ---------------------------------------------------------------
note "finished $(date -u +%Y-%m-%dT%H:%M:%SZ), $SECONDS s after the start (install and build included)"
[ ${#FAILED[@]} -eq 0 ] || note "failed steps: ${FAILED[*]}"
record "$PY" bench/report.py bench/results
log "writing bench/RESULTS.md and bench/throughput.png"
"$PY" "$BENCH/report.py" "$RESULTS"

log "done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
if [ "$SECONDS" -gt 900 ]; then
  log "warning: the run took more than 15 minutes"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  log "failed steps: ${FAILED[*]} (see bench/results/commands.txt and bench/RESULTS.md)"
  exit 1
fi
