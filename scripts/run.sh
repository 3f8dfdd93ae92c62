#!/usr/bin/env bash
# Quickstart 1: builds and starts reeld on its embedded default: data in
# ./reel-data (relative to where you run this), listening on 127.0.0.1:7878.
# Extra arguments go to reeld (see `scripts/run.sh --help`).
set -euo pipefail

here="$(pwd)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/scripts/deps.sh"
cd "$root"
bazel build //api:reeld //cli:reelctl >&2
bin="$(bazel info bazel-bin 2>/dev/null)"
cd "$here"
echo "run: reelctl is at $bin/cli/reelctl (try: $bin/cli/reelctl health)" >&2
exec "$bin/api/reeld" "$@"
