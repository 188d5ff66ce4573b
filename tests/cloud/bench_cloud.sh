#!/bin/sh
# Cloud provider benchmark for scripts/bench.sh: prints "key value" lines.
#   tests/cloud/bench_cloud.sh [--dbosfs BUILD/dbosfs] [--runs N]
exec /usr/bin/python3 "$(dirname "$0")/bench_cloud.py" "$@"
