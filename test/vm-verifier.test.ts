// The verifier budget on another kernel: boots Debian's generic kernel (bookworm, 6.1) under qemu with this
// checkout (test/vm/) and runs test/vm/verifier.vmtest.ts inside it, which loads every bpfproxy program and
// holds its verified instruction count to the budget in docs/architecture.md. The counts are printed here.
// The VM failing to start is a failure, never a skip. Needs root and `npm run build`.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { runInVm, type VmRun } from "./vm/vm.js";
import { budgetColumn, formatCosts, readBudget, type ProgramCost } from "./fixtures/verifier.js";

// Without V8's JIT, as test/vm-ipvs.test.ts runs its BPF file (tsx crashed under qemu's TCG otherwise).
const GUEST_TEST = "NODE_OPTIONS=--jitless test/vm/verifier.vmtest.ts";
let run: VmRun;

before(
  async () => {
    run = await runInVm("test/vm/guest.sh", { timeoutSeconds: 900, inputs: { tests: GUEST_TEST + "\n" } });
    console.log(`# vm: booted after ${run.bootSeconds.toFixed(1)} s; whole run ${run.totalSeconds.toFixed(0)} s`);
  },
  { timeout: 1_000_000 },
);

test("inside the VM on 6.1: every program loads within its verifier budget", () => {
  const tap = run.files.get("1.tap") ?? "";
  const json = run.files.get("verifier.json");
  assert.ok(json, `the guest wrote no counts; console:\n${run.console.slice(-4000)}`);
  const { kernel, costs } = JSON.parse(json) as { kernel: string; costs: ProgramCost[] };
  console.log(formatCosts(`linux ${kernel}`, costs, readBudget(budgetColumn(kernel))));
  assert.match(kernel, /^6\.1\./);
  assert.equal(run.files.get("1.rc")?.trim(), "0", `the guest test failed:\n${tap}\n${run.console.slice(-4000)}`);
  assert.match(tap, /^# pass 3$/m);
  assert.match(tap, /^# fail 0$/m);
});
