// Every bpfproxy program loads on this machine's kernel, and what the verifier made of each is printed beside
// the budget written in docs/architecture.md ("Verifier budget") and held to it: the column for kernels other
// than Debian 12's 6.1 (test/vm-verifier.test.ts enforces that one in a VM). Needs root.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { release } from "node:os";
import { PrivateBpffs } from "../src/lab/proxy.js";
import {
  budgetColumn,
  formatCosts,
  measurePrograms,
  overBudget,
  readBudget,
  type ProgramCost,
} from "./fixtures/verifier.js";

let bpffs: PrivateBpffs | undefined;
let costs: ProgramCost[] = [];
const refused = new Map<string, string>();
const budget = readBudget(budgetColumn(release()));

before(() => {
  assert.equal(process.getuid?.(), 0, "test/verifier-budget.test.ts loads BPF programs: run it as root");
  bpffs = PrivateBpffs.create("verifier");
  costs = measurePrograms(bpffs.path, release(), refused);
  console.log(formatCosts(`linux ${release()}`, costs, budget));
});

after(() => bpffs?.release());

test("every program of bpfproxy.o, bpfproxy_sock.o and (Linux >= 6.5) bpfproxy_sock_term.o loads, with a verified instruction count", () => {
  assert.deepEqual([...refused], [], "objects the kernel refused");
  assert.deepEqual(costs.map((c) => c.program).sort(), [...budget.keys()].sort());
  for (const c of costs) assert.ok(c.verifiedInsns > 0 && c.xlatedInsns > 0, JSON.stringify(c));
});

test("no program exceeds its verifier budget (docs/architecture.md)", () => {
  assert.deepEqual(overBudget(costs, budget), []);
});

test("the budget check itself notices a program over budget and one without a budget", () => {
  const c: ProgramCost = { object: "x.o", program: "bpx_xdp", verifiedInsns: 11, xlatedInsns: 1, jitedBytes: 1 };
  assert.equal(overBudget([c], new Map([["bpx_xdp", 10]])).length, 1);
  assert.deepEqual(overBudget([c], new Map([["bpx_xdp", 11]])), []);
  assert.equal(overBudget([{ ...c, program: "bpx_new" }], new Map()).length, 1);
});
