#!/usr/bin/env bash
# Lints and checks formatting: ESLint (typescript-eslint, type-checked) and Prettier for the TypeScript,
# clang-format for the C in bpf/ and the C++ in native/src/ (each directory has its own .clang-format).
# Usage: scripts/lint.sh          check only; non-zero exit on any finding (npm run lint)
#        scripts/lint.sh --fix    rewrite files: Prettier, clang-format, ESLint's safe fixes (npm run format)
set -euo pipefail
cd "$(dirname "$0")/.."

c_files() { find bpf native/src \( -name '*.c' -o -name '*.h' -o -name '*.cc' \) -not -path 'native/build/*' | sort; }

if [ "${1:-}" = "--fix" ]; then
  # ESLint's fixes first, so that Prettier has the last word on layout.
  npx eslint --fix .
  npx prettier --write --log-level warn .
  # A second pass: Prettier lays out a few long member chains differently once their first layout exists.
  npx prettier --write --log-level warn .
  c_files | xargs clang-format -i
  exit 0
fi

status=0
npx eslint . || status=1
npx prettier --check --log-level warn . || status=1
c_files | xargs clang-format --dry-run -Werror || status=1
[ "$status" = 0 ] && echo "lint: no findings"
exit "$status"
