#!/bin/sh
# Runs inside the test VM (started by test/vm/run.sh): each test file listed in $VM_RESULTS/tests (one
# per line, paths relative to the repository, optional env assignments before it) with node's test
# runner; TAP to $VM_RESULTS/<n>.tap, exit status to $VM_RESULTS/<n>.rc. Exits non-zero when any file
# failed, when there was nothing to run, or when setup failed, so the VM's exit-status says so too.
cd "$(dirname "$0")/../.." || exit 1
ip link set lo up || exit 1
# Under emulation the lab's commands are many times slower (src/lab/netns.ts): larger bounds, same waits.
export BPFPROXY_LAB_TIMEOUT_SCALE=6
[ -r "$VM_RESULTS/tests" ] || { echo "GUEST: no test list at $VM_RESULTS/tests"; exit 1; }
n=0
failed=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  n=$((n + 1))
  start=$(cut -d' ' -f1 /proc/uptime)
  echo "GUEST: test $n: $line"
  # shellcheck disable=SC2086
  env $(echo "$line" | tr ' ' '\n' | grep '=' ) node --import tsx --test --test-reporter=tap --test-reporter-destination="$VM_RESULTS/$n.tap" \
    --test-reporter=dot --test-reporter-destination=stdout $(echo "$line" | tr ' ' '\n' | grep -v '=') </dev/null
  rc=$?
  echo "$rc" > "$VM_RESULTS/$n.rc"
  [ "$rc" -eq 0 ] || { failed=$((failed + 1)); echo "GUEST: test $n failed (exit $rc)"; }
  echo "$(cut -d' ' -f1 /proc/uptime) $start" | awk '{print $1 - $2}' > "$VM_RESULTS/$n.seconds"
done < "$VM_RESULTS/tests"
[ "$n" -gt 0 ] || { echo "GUEST: the test list was empty"; exit 1; }
echo "GUEST: done, $failed of $n failed"
[ "$failed" -eq 0 ]
