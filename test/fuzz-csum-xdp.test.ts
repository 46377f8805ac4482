// The CHECKSUM_PARTIAL/GSO packet fuzzer (test/fixtures/csum-fuzz.ts) with XDP in generic mode on the nodes'
// eth0, a veth at the kernel's defaults: the frames XDP sees there are CHECKSUM_PARTIAL (the external host's,
// and the backends' replies node-b forwards), as are GRO'd TCP packets on any NIC, which generic XDP runs
// after. XDP cannot see ip_summed: it passes a packet whose L4 checksum field equals its pseudo-header sum to
// tc (xdp_pass_csum_partial); before it did, it updated such a field as a complete checksum and the packets
// it sent itself left with a wrong checksum once the receiving tap finalized it (docs/architecture.md, XDP
// and checksums). FUZZ_SEED and FUZZ_FLOWS narrow a run. Needs root.
import assert from "node:assert/strict";
import { csumFuzzSuite } from "./fixtures/csum-fuzz.js";

assert.equal(process.getuid?.(), 0, "builds namespaces, taps and loads BPF: run as root");

// XDP finishes packets only when they may bypass the stack (bpf/lib/fib.h), as in test/e2e-northsouth.test.ts.
// XDP must have passed CHECKSUM_PARTIAL packets to tc (counted) and still finished full-checksum ones itself.
csumFuzzSuite({
  name: "XDP generic on veths at defaults",
  tag: "x",
  args: ["--xdp", "generic", "--bypass-netfilter"],
  checkCounters: ({ a, b }) => {
    const sum = (name: string) => (a[name] ?? 0) + (b[name] ?? 0);
    assert.ok(sum("xdp_pass_csum_partial") >= 1, `CHECKSUM_PARTIAL packets passed to tc: ${JSON.stringify({ a, b })}`);
    assert.ok(
      sum("xdp_tx") + sum("xdp_redirect") >= 1,
      `full-checksum packets sent by XDP: ${JSON.stringify({ a, b })}`,
    );
  },
});
