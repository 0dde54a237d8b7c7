#!/bin/bash
# Serving A/B of two checkouts of zenlm, alternated in one run (same machine conditions).
#
#     bash benchmarks/serve_ab.sh OLD_CHECKOUT NEW_CHECKOUT [ROUNDS]
#
# e.g. `git worktree add --detach /tmp/old 0460798` then
#      `bash benchmarks/serve_ab.sh /tmp/old "$PWD" 2`.
# Each round runs benchmarks/serve.py (zenlm's server only, 16 clients, 64 requests of 64
# tokens, --quantize auto) from OLD then NEW, each with its own src/ on PYTHONPATH and its
# own copy of the script; the Python is this checkout's .venv.
set -euo pipefail
old=$1 new=$2 rounds=${3:-2}
python=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python
for round in $(seq "$rounds"); do
  for side in "$old" "$new"; do
    echo "=== round $round: $side $(git -C "$side" log --oneline -1 | cut -c1-60)"
    (cd "$side" && PYTHONPATH=src timeout 900 "$python" benchmarks/serve.py --servers zenlm \
      --concurrency 16 --requests 64 --single 3 --max-tokens 64 --quantize auto 2>&1 \
      | grep -E "single stream|load average|CPU")
  done
done
