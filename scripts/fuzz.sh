#!/usr/bin/env bash
# Builds reel's libFuzzer targets (fuzz/*.c) with clang, under ASan + UBSan,
# and runs each one against its committed corpus (fuzz/corpus/<target>).
#
#   scripts/fuzz.sh                          every target, 20 s each
#   scripts/fuzz.sh --seconds 600            longer runs
#   scripts/fuzz.sh --seconds 60 fuzz_json   one target
#   scripts/fuzz.sh --merge                  also merge new inputs into the corpus
#
# Prints each target's final libFuzzer stats and "fuzz: N passed, N failed".
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds=20
merge=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_json fuzz_pattern fuzz_requests fuzz_records)

PACKAGES=(clang libclang-rt-14-dev protobuf-c-compiler libprotobuf-c-dev librocksdb-dev uthash-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = "installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "fuzz: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || exit 1
fi

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
mkdir -p "$build/gen"
protoc-c --proto_path=api --c_out="$build/gen" api/reel/v1/*.proto \
  api/grpc/health/v1/health.proto || exit 1

srcs=()
for f in base/*.c store/store.c feed/feed.c kv/kv.c kv/kv_watch.c journal/*.c \
         signals/signals.c api/wire.c "$build"/gen/reel/v1/*.pb-c.c \
         "$build"/gen/grpc/health/v1/*.pb-c.c; do
  case "$f" in *_test.c) ;; *) srcs+=("$f") ;; esac
done
cflags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -Wall -Wextra -Wno-unused-parameter -Werror -I. -I"$build/gen")

# store's one C++ file (RocksDB's logger), compiled once for every target
# (without UBSan's vptr check, whose runtime only a C++ link brings)
if ! clang++ -std=c++17 -g -O1 -fno-omit-frame-pointer \
     -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=vptr \
     -fno-sanitize-recover=all -Wall -Wextra -Werror -I. \
     -c store/rocks_log.cc -o "$build/rocks_log.o"; then
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi

passed=0
failed=0
for t in "${targets[@]}"; do
  echo "== $t: build"
  if ! clang "${cflags[@]}" "fuzz/$t.c" "${srcs[@]}" "$build/rocks_log.o" \
       -o "$build/$t" -lrocksdb -lprotobuf-c -lpthread -lstdc++; then
    failed=$((failed + 1)); continue
  fi
  mkdir -p "fuzz/corpus/$t" "$build/new/$t"
  echo "== $t: ${seconds}s"
  # New inputs go to the scratch dir; the committed corpus seeds the run.
  if ASAN_OPTIONS=detect_leaks=1 "$build/$t" -max_total_time="$seconds" \
       -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       "$build/new/$t" "fuzz/corpus/$t" >"$build/$t.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$build/$t.log" | sed "s/^/  /"
    if [ $merge -eq 1 ]; then
      "$build/$t" -merge=1 "fuzz/corpus/$t" "$build/new/$t" >/dev/null 2>&1
    fi
  else
    failed=$((failed + 1))
    tail -60 "$build/$t.log"
    ls "$build"/crash-* "$build"/leak-* "$build"/timeout-* 2>/dev/null
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
