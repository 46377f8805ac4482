#!/usr/bin/env bash
# Runs the whole test suite with node's test runner. Kernel tests need root.
# Usage: scripts/test.sh [test files...]   (default: every test/**/*.test.ts)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test: bpfproxy's tests load BPF programs and build network namespaces; run them as root" >&2
  exit 1
fi
npx tsc -p tsconfig.test.json
if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
# One file at a time: kernel tests build namespaces and pins and must not race each other.
exec node --import tsx --test --test-concurrency=1 "${files[@]}"
