#!/usr/bin/env bash
# ThreadSanitizer check: builds dbosfs with -fsanitize=thread (build-tsan)
# and runs the C unit tests there, including the local-provider smoke test
# (a real provider with its supervisor, prober and preparer threads, real
# PostgreSQL servers, concurrent provisions). Not part of scripts/test.sh:
# TSan slows the smoke test down several times and the suite has a 30-minute
# budget. Any data race fails the run (halt_on_error). Usage:
#   scripts/check-tsan.sh [meson test args, e.g. test_local_smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh build-tsan -Db_sanitize=thread -Dbuildtype=debugoptimized
# setarch -R: TSan needs a fixed memory layout on kernels with high mmap
# randomisation ("unexpected memory mapping" otherwise).
runner=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
	runner=(setarch "$(uname -m)" -R)
fi
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
"${runner[@]}" meson test -C build-tsan --print-errorlogs -t 4 "$@"
