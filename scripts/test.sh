#!/usr/bin/env bash
# Quickstart 2: runs every test: the cmocka unit tests (bazel test //...),
# the end-to-end tests against a real reeld through Python's grpcio (reel-sink's
# among them, with their kill -9 cycles and a real nats-server), the
# kill -9 crash test (tests/crash, 10 cycles), the Python client's tests
# (clients/python, installed offline into a fresh venv), a smoke run of
# reel-bench, and
# both again under AddressSanitizer + UndefinedBehaviorSanitizer, and a short
# run of each libFuzzer target (scripts/fuzz.sh) against its committed corpus.
#
#   scripts/test.sh            everything
#   scripts/test.sh --no-asan  skip the sanitizer pass (quicker, for development)
#   scripts/test.sh --no-fuzz  skip the short fuzz runs
#
# Prints each runner's summary and a closing "total: N passed, N failed".
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
asan=1
fuzz=1
for a in "$@"; do
  case "$a" in
    --no-asan) asan=0 ;;
    --no-fuzz) fuzz=0 ;;
    *) echo "usage: scripts/test.sh [--no-asan] [--no-fuzz]" >&2; exit 2 ;;
  esac
done

"$root/scripts/deps.sh" || exit 1

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
status=0

# Adds the cmocka summaries of every unit test log under $1 to the totals.
count_unit() {
  local dir="$1" p f
  while IFS= read -r log; do
    p=$(grep -ahoE '^\[  PASSED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | tail -1)
    f=$(grep -ahoE '^\[  FAILED  \] [0-9]+ test' "$log" | grep -oE '[0-9]+' | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    grep -ahE '^\[  (PASSED|FAILED)  \]|^\[==========\] [0-9]+ test' "$log" | sed "s|^|  ${log#$dir/}: |"
  done < <(find -L "$dir" -name test.log | sort)
}

# Runs pytest on tests/e2e against the given binaries.
run_e2e() {
  local label="$1" bin="$2" xml="$logs/e2e-$1.xml"
  echo "== e2e ($label): pytest tests/e2e"
  REELD="$bin/api/reeld" REELCTL="$bin/cli/reelctl" \
    REEL_CONSUMER_E2E="$bin/client/consumer_e2e" \
    REEL_SINK="$bin/sink/reel-sink" REEL_NATS_DUMP="$bin/sink/nats_dump" \
    REEL_REACTOR="$bin/reactor/reel-reactor" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$xml" tests/e2e
  local rc=$?
  [ $rc -eq 0 ] || status=1
  if [ -f "$xml" ]; then
    read -r t f e s < <(/usr/bin/python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
g = lambda k: sum(int(x.get(k, 0)) for x in suites)
print(g("tests"), g("failures"), g("errors"), g("skipped"))
PY
)
    passed=$((passed + t - f - e - s))
    failed=$((failed + f + e))
  else
    failed=$((failed + 1))
  fi
}

run_config() {
  local label="$1"; shift
  echo "== unit ($label): bazel test //... $*"
  if ! bazel test "$@" //... >"$logs/bazel-$label.log" 2>&1; then
    status=1
    cat "$logs/bazel-$label.log"
  fi
  grep -E '^//|Executed [0-9]+ out of' "$logs/bazel-$label.log" || true
  count_unit "$(bazel info "$@" bazel-testlogs 2>/dev/null)"
  if ! bazel build "$@" //api:reeld //cli:reelctl //client:consumer_e2e \
      //sink:reel-sink //sink:nats_dump //reactor:reel-reactor \
      >"$logs/build-$label.log" 2>&1; then
    status=1
    cat "$logs/build-$label.log"
    failed=$((failed + 1))
    return
  fi
  run_e2e "$label" "$(bazel info "$@" bazel-bin 2>/dev/null)"
}

run_config default

# kill -9 under a mixed load, 10 cycles, against the default build.
echo "== crash: pytest tests/crash (10 kill -9 cycles)"
REELD="$(bazel info bazel-bin 2>/dev/null)/api/reeld" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml="$logs/crash.xml" tests/crash
[ $? -eq 0 ] || status=1
if [ -f "$logs/crash.xml" ]; then
  read -r t f e s < <(/usr/bin/python3 - "$logs/crash.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
g = lambda k: sum(int(x.get(k, 0)) for x in suites)
print(g("tests"), g("failures"), g("errors"), g("skipped"))
PY
)
  passed=$((passed + t - f - e - s))
  failed=$((failed + f + e))
else
  failed=$((failed + 1))
fi

# Adds the counts of a pytest --junitxml report to the totals (a missing
# report is one failure: the runner did not get that far).
count_junit() {
  local xml="$1" t f e s
  if [ ! -f "$xml" ]; then
    failed=$((failed + 1))
    return
  fi
  read -r t f e s < <(/usr/bin/python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
g = lambda k: sum(int(x.get(k, 0)) for x in suites)
print(g("tests"), g("failures"), g("errors"), g("skipped"))
PY
)
  passed=$((passed + t - f - e - s))
  failed=$((failed + f + e))
}

# The Python client as a user installs it: a venv on Debian's grpcio and
# protobuf, pip offline from a copy of clients/python (the build leaves
# nothing in the tree), then its tests against the default build's reeld.
echo "== python client: pytest clients/python/tests"
venv="$logs/venv"
cp -r "$root/clients/python" "$logs/pyclient-src"
if /usr/bin/python3 -m venv --system-site-packages "$venv" >"$logs/venv.log" 2>&1 &&
   "$venv/bin/pip" install --no-build-isolation --no-index "$logs/pyclient-src" \
     >>"$logs/venv.log" 2>&1; then
  REELD="$(bazel info bazel-bin 2>/dev/null)/api/reeld" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$logs/pyclient.xml" \
    clients/python/tests
  [ $? -eq 0 ] || status=1
  count_junit "$logs/pyclient.xml"
else
  status=1
  cat "$logs/venv.log"
  failed=$((failed + 1))
fi

# reel-bench's smoke mode: every benchmark for a moment against a reeld it
# starts, so the tool keeps working (the benchmarks are bench/run.sh).
echo "== bench: reel-bench smoke"
if bazel build //bench:reel-bench >"$logs/build-bench.log" 2>&1; then
  bin="$(bazel info bazel-bin 2>/dev/null)"
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin/bench/reel-bench" smoke --reeld "$bin/api/reeld" --data-dir "$logs/smoke" \
    --addr "127.0.0.1:$port" >"$logs/smoke.log" 2>&1
  [ $? -eq 0 ] || { status=1; cat "$logs/smoke.log"; }
  grep -E '^smoke:' "$logs/smoke.log" || true
  read -r sp sf < <(sed -nE 's/^smoke: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$logs/smoke.log")
  passed=$((passed + ${sp:-0}))
  failed=$((failed + ${sf:-1}))
else
  status=1
  cat "$logs/build-bench.log"
  failed=$((failed + 1))
fi

if [ $asan -eq 1 ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  run_config asan --config=asan
fi

if [ $fuzz -eq 1 ]; then
  echo "== fuzz: scripts/fuzz.sh --seconds 20"
  bash "$root/scripts/fuzz.sh" --seconds 20 >"$logs/fuzz.log" 2>&1
  [ $? -eq 0 ] || status=1
  grep -E '^==|^  |^fuzz:' "$logs/fuzz.log" || cat "$logs/fuzz.log"
  read -r fp ff < <(sed -nE 's/^fuzz: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/p' "$logs/fuzz.log")
  passed=$((passed + ${fp:-0}))
  failed=$((failed + ${ff:-1}))
fi

[ $failed -eq 0 ] || status=1
echo "total: $passed passed, $failed failed"
exit $status
