#!/usr/bin/env bash
# Builds the BPF objects, the native addon and the TypeScript, each only when its inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."

make -s -C bpf

# node-gyp ships with npm; use that one so no extra download is needed.
gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
[ -f "$gyp" ] || gyp="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
addon=native/build/Release/bpfproxy.node
if [ ! -f "$addon" ] || [ -n "$(find native/src native/binding.gyp -newer "$addon" 2>/dev/null | head -1)" ]; then
  echo "build: native addon"
  (cd native && node "$gyp" rebuild --nodedir="${npm_config_nodedir:-/usr}" --loglevel=error >/dev/null)
fi

stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src tsconfig.json package-lock.json -newer "$stamp" 2>/dev/null | head -1)" ]; then
  echo "build: typescript"
  npx tsc -p tsconfig.json
  chmod +x dist/cli.js 2>/dev/null || true
  touch "$stamp"
fi
