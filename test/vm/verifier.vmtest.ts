// Runs INSIDE the test VM (test/vm-verifier.test.ts boots it) on Debian's 6.1 kernel: every bpfproxy program
// loads, and its verified instruction count stays within the budget in docs/architecture.md. The numbers go
// to the console and to $VM_RESULTS/verifier.json for the host side to print.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { PrivateBpffs } from "../../src/lab/proxy.js";
import {
  budgetColumn,
  formatCosts,
  measurePrograms,
  overBudget,
  readBudget,
  type ProgramCost,
} from "../fixtures/verifier.js";

let bpffs: PrivateBpffs | undefined;
let costs: ProgramCost[] = [];
const refused = new Map<string, string>();
const budget = readBudget(budgetColumn(release()));

before(() => {
  assert.equal(process.getuid?.(), 0, "run as root (inside the test VM)");
  bpffs = PrivateBpffs.create("verifier");
  costs = measurePrograms(bpffs.path, release(), refused);
  console.log(formatCosts(`linux ${release()}`, costs, budget));
  if (process.env.VM_RESULTS)
    writeFileSync(join(process.env.VM_RESULTS, "verifier.json"), JSON.stringify({ kernel: release(), costs }));
});

after(() => bpffs?.release());

test("every program of bpfproxy.o and bpfproxy_sock.o loads on 6.1, with a verified instruction count", () => {
  assert.match(release(), /^6\.1\./);
  assert.deepEqual(costs.map((c) => c.program).sort(), [...budget.keys()].sort());
  for (const c of costs) assert.ok(c.verifiedInsns > 0, JSON.stringify(c));
});

test("bpfproxy_sock_term.o (bpf_sock_destroy, Linux >= 6.5) is refused on 6.1, as the daemon expects", () => {
  console.log(`refused: ${JSON.stringify([...refused])}`);
  assert.deepEqual([...refused.keys()], ["bpf/bpfproxy_sock_term.o"]);
  assert.match(refused.get("bpf/bpfproxy_sock_term.o")!, /bpf_sock_destroy|kfunc|ksym|ESRCH|ENOENT|EINVAL/i);
});

test("no program exceeds its verifier budget on 6.1 (docs/architecture.md)", () => {
  assert.deepEqual(overBudget(costs, budget), []);
});
