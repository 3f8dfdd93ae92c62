#!/usr/bin/env bash
# Builds reel's libFuzzer targets with Bazel (bazel build --config=fuzz:
# clang, ASan + UBSan; the targets are the cc_binary rules of fuzz/BUILD)
# and runs each one against its committed corpus (fuzz/corpus/<target>).
#
#   scripts/fuzz.sh                          every target, 20 s each
#   scripts/fuzz.sh --seconds 600            longer runs
#   scripts/fuzz.sh --seconds 60 fuzz_json   one target
#   scripts/fuzz.sh --merge                  also merge new inputs into the corpus
#
# Prints each target's final libFuzzer stats and "fuzz: N passed, N failed".
# An input that fails is kept (the path is printed); replay it under gcc and
# ASan with: bazel build --config=asan //fuzz:TARGET && bazel-bin/fuzz/TARGET FILE
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
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

"$root/scripts/deps.sh" || exit 1

work="$(mktemp -d)"
keep=0
trap '[ $keep -eq 1 ] || rm -rf "$work"' EXIT

if [ ${#targets[@]} -eq 0 ]; then
  if ! bazel query 'kind("cc_binary", //fuzz:all)' >"$work/targets" 2>"$work/query.log"; then
    cat "$work/query.log"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
  fi
  mapfile -t targets < <(sed "s|^//fuzz:||" "$work/targets" | sort)
fi

echo "== build: bazel build --config=fuzz ${targets[*]}"
if ! bazel build --config=fuzz "${targets[@]/#///fuzz:}" >"$work/build.log" 2>&1; then
  cat "$work/build.log"
  echo "fuzz: 0 passed, ${#targets[@]} failed"
  exit 1
fi
bin="$(bazel info --config=fuzz bazel-bin 2>/dev/null)/fuzz"

passed=0
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "$work/new/$t" "$work/artifacts"
  echo "== $t: ${seconds}s"
  # New inputs go to the scratch dir; the committed corpus seeds the run.
  if ASAN_OPTIONS=detect_leaks=1 "$bin/$t" -max_total_time="$seconds" \
       -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/$t-" \
       "$work/new/$t" "fuzz/corpus/$t" >"$work/$t.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/$t.log" | sed "s/^/  /"
    if [ $merge -eq 1 ]; then
      "$bin/$t" -merge=1 "fuzz/corpus/$t" "$work/new/$t" >/dev/null 2>&1
    fi
  else
    failed=$((failed + 1))
    keep=1
    tail -60 "$work/$t.log"
    ls "$work/artifacts/$t-"* 2>/dev/null | sed "s/^/  failing input: /"
  fi
done
[ $keep -eq 0 ] || echo "fuzz: the failing inputs are kept in $work/artifacts"
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
