// Packet fuzzing with the offloads a real node sees, CHECKSUM_PARTIAL and GSO, through the running daemons'
// tc programs on the two-node lab (test/fixtures/csum-fuzz.ts says how): on the default stack path and with
// --bypass-netfilter (delivery past the stack, bpf_redirect_neigh). FUZZ_SEED, FUZZ_FLOWS and
// FUZZ_MODES=stack or bypass-netfilter narrow a run. Needs root.
import assert from "node:assert/strict";
import { csumFuzzSuite, type CsumFuzzMode } from "./fixtures/csum-fuzz.js";

assert.equal(process.getuid?.(), 0, "builds namespaces, taps and loads BPF: run as root");

const MODES: CsumFuzzMode[] = [
  { name: "stack path", tag: "s", args: [] },
  { name: "bypass-netfilter path", tag: "b", args: ["--bypass-netfilter"] },
];
const only = process.env.FUZZ_MODES?.split(",");
for (const mode of MODES) if (!only || only.some((o) => mode.name.startsWith(o))) csumFuzzSuite(mode);
