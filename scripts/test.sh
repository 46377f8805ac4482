#!/usr/bin/env bash
# Runs tests with node's test runner.
# Usage: scripts/test.sh [test files...]   every test/**/*.test.ts by default; kernel tests need root
#        scripts/test.sh --unit            only the tests that need neither root nor the kernel
set -euo pipefail
cd "$(dirname "$0")/.."

# As root, every test runs inside a network namespace of its own, made here and gone when the run ends: what a
# test does outside the lab's namespaces (a fake API server or a health server on loopback, a probe of the
# current namespace) then never reaches the machine's own network namespace. Lab namespaces (ip netns add) are
# made beside it as before.
if [ "$(id -u)" = 0 ] && [ -z "${BPFPROXY_TEST_NETNS:-}" ]; then
  command -v unshare >/dev/null || { echo "test: unshare (util-linux) not found" >&2; exit 1; }
  # The 6.1 VM's kernel package is fetched (apt, once, into .vm-cache) before the network goes away.
  if [ "$#" -eq 0 ] || printf '%s\n' "$@" | grep -q '^test/vm-'; then bash test/vm/setup.sh >/dev/null; fi
  # The image build fetches packages (debootstrap, npm): it runs in the machine's namespace.
  if ! { [ "$#" -eq 1 ] && [ "$1" = test/image.test.ts ]; }; then
    exec unshare --net -- env BPFPROXY_TEST_NETNS=1 bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
  fi
fi

# Tests that touch no kernel state, namespaces or pins: they run as any user (npm run test:unit).
unit_tests=(
  test/apiserver.test.ts test/cli.test.ts test/config.test.ts test/daemon.test.ts test/deploy.test.ts
  test/folder-render.test.ts test/folder.test.ts test/health.test.ts test/interface-glob.test.ts test/ip.test.ts test/metrics.test.ts
  test/model-cache.test.ts test/model-health.test.ts test/model.test.ts test/model-dualstack.test.ts test/reconcile.test.ts
  test/schemas.test.ts test/maglev.test.ts test/reconcile-ids.test.ts test/config-northsouth.test.ts
  test/fuzz-objects.test.ts test/externalips-allowlist.test.ts test/bench-harness.test.ts test/prefilter.test.ts
  test/model-index.test.ts test/model-record.test.ts test/map-contents.test.ts test/lab-layout.test.ts test/explain-model.test.ts
  test/grafana-dashboard.test.ts test/traffic-counters.test.ts test/entry-table.test.ts
)

if [ "${1:-}" = "--unit" ]; then
  files=("${unit_tests[@]}")
else
  if [ "$(id -u)" != 0 ]; then
    echo "test: the whole suite loads BPF programs and builds network namespaces, so it needs root." >&2
    echo "      Without root, run the tests that need neither: npm run test:unit" >&2
    exit 1
  fi
  # test/image.test.ts builds the container image (minutes when cold): npm run test:image, run by .ci/run.
  if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' -not -path test/image.test.ts | sort); fi
fi
if [ "${1:-}" != "--unit" ] && [ "$#" -eq 0 ]; then bash scripts/lint.sh; fi  # the whole suite (npm test, CI) lints too
npx tsc -p tsconfig.test.json
# One file at a time: kernel tests build namespaces and pins and must not race each other.
run() { node --import tsx --test --test-concurrency=1 "$@"; }
if [ "${1:-}" = "--unit" ] || [ "$#" -gt 0 ]; then exec node --import tsx --test --test-concurrency=1 "${files[@]}"; fi

# The whole suite: the files that boot the 6.1 VM (test/vm-*.test.ts) run beside the others, at the lowest CPU
# priority. Under qemu's software emulation they are ~10 min of CPU and touch no host namespace, cgroup or pin,
# so they take the CPU the namespace tests leave idle (those mostly wait on packets and timeouts) instead of
# adding their length to the suite's. Their in-guest bounds are scaled for a slow guest (test/vm/guest.sh).
vm_files=() host_files=()
for f in "${files[@]}"; do case "$f" in test/vm-*.test.ts) vm_files+=("$f") ;; *) host_files+=("$f") ;; esac; done
vm_rc=0 host_rc=0
if [ "${#vm_files[@]}" -gt 0 ]; then
  vm_log=$(mktemp /tmp/bpfproxy-vm-tests.XXXXXX)
  trap 'rm -f "$vm_log"' EXIT
  nice -n 19 node --import tsx --test --test-concurrency=1 "${vm_files[@]}" >"$vm_log" 2>&1 &
  vm_pid=$!
fi
run "${host_files[@]}" || host_rc=$?
if [ "${#vm_files[@]}" -gt 0 ]; then
  wait "$vm_pid" || vm_rc=$?
  echo "# ---- the VM files (${vm_files[*]}), run beside the others ----"
  cat "$vm_log"
fi
echo "# host files: exit $host_rc; VM files: exit $vm_rc"
[ "$host_rc" = 0 ] && [ "$vm_rc" = 0 ]
