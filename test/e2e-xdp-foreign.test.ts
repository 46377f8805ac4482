// End to end: an XDP program bpfproxy did not attach is never replaced (issue 16 item 8, docs/security.md).
// A device can hold one XDP program; another tool's (a firewall, a DDoS filter) must survive bpfproxy starting
// with --xdp on that device: bpfproxy leaves it, says so naming the device and the program's id, and tc does
// its work there (a NodePort still answers). bpfproxy's own program from an earlier run is still replaced
// atomically by a restart. Everything lives in namespaces the lab makes and removes.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { arch, tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_IP = "192.0.2.11";
const WEB = "10.244.1.5";
const NODE_PORT = 30080;

// The other tool: an XDP program that passes everything.
const OTHER = `
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int other_tool(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] __attribute__((section("license"), used)) = "GPL";
`;

describe("another tool's XDP program", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  const xdpOnEth0 = async (): Promise<{ id: number; name: string } | null> => {
    const out = await lab.run("node-a", ["ip", "-j", "-d", "link", "show", "dev", "eth0"]);
    const link = (JSON.parse(out) as Array<{ xdp?: { prog?: { id: number; name?: string } } }>)[0]!;
    if (!link.xdp?.prog) return null;
    const prog = JSON.parse(
      execFileSync("bpftool", ["-j", "prog", "show", "id", String(link.xdp.prog.id)], { encoding: "utf8" }),
    ) as {
      name: string;
    };
    return { id: link.xdp.prog.id, name: prog.name };
  };
  const start = async (name: string) =>
    ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--xdp", "generic", "--healthz-bind-address", "", "--metrics-bind-address", ""],
    }).then(
      async (p) => {
        await p.waitForStatus((s) => s.frontends.some((f) => f.port === NODE_PORT && f.backends.length === 1), 10_000);
        return p;
      },
      (e: Error) => {
        throw new Error(`${name}: ${e.message}`);
      },
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-xdpforeign-"));
    writeFileSync(join(dir, "other.c"), OTHER);
    const inc = `/usr/include/${arch() === "arm64" ? "aarch64" : "x86_64"}-linux-gnu`;
    execFileSync("clang", [
      "-O2",
      "-target",
      "bpf",
      `-I${inc}`,
      "-c",
      join(dir, "other.c"),
      "-o",
      join(dir, "other.o"),
    ]);
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service("web", "10.96.0.10", [{ ...HTTP, nodePort: NODE_PORT }], { spec: { type: "NodePort" } }),
        endpointSlice("web", [HTTP], [{ ip: WEB, node: "node-a", ready: true }]),
        node("node-a", NODE_IP),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxxf${process.pid}-`,
      nodes: [{ name: "node-a", ip: NODE_IP, podCIDR: "10.244.1.0/24", pods: [{ name: "web-1", ip: WEB }] }],
      external: { name: "external", ip: "198.51.100.10" },
    });
    await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080] });
    bpffs = PrivateBpffs.create("xdpforeign-a");
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("is left attached: a clear error names the device and its id, and tc serves the device", async () => {
    await lab.run("node-a", [
      "ip",
      "link",
      "set",
      "dev",
      "eth0",
      "xdpgeneric",
      "obj",
      join(dir, "other.o"),
      "sec",
      "xdp",
    ]);
    const other = await xdpOnEth0();
    assert.ok(other && other.name === "other_tool", `the other tool's program is attached: ${JSON.stringify(other)}`);

    proxy = await start("with another XDP program");
    await proxy.waitForLog(
      new RegExp(`XDP not attached: another program.* interface="eth0" programId=${other.id} programName="other_tool"`),
    );
    assert.deepEqual(await xdpOnEth0(), other, "the other tool's program is still the one on eth0");
    const st = await proxy.status();
    assert.ok(
      st.attachments.some((a) => a.interface === "eth0" && a.hook === "tc-ingress"),
      `tc serves eth0: ${JSON.stringify(st.attachments)}`,
    );
    assert.ok(!st.attachments.some((a) => a.hook === "xdp"), "no bpfproxy XDP attachment reported");
    const r = await echoRequest(lab, "external", { tcp: `${NODE_IP}:${NODE_PORT}`, count: 5, timeoutMs: 2000 });
    assert.deepEqual(
      r.filter((x) => !x.ok),
      [],
      "the NodePort answers through tc",
    );
    await proxy.stop();
    await proxy.cleanup();
    proxy = undefined;
    assert.deepEqual(await xdpOnEth0(), other, "cleanup leaves the other tool's program too");
    await lab.run("node-a", ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "off"]);
  });

  test("bpfproxy's own program from an earlier run is replaced by a restart", async () => {
    proxy = await start("first run");
    await proxy.waitForLog(/attached interface="eth0" hook="xdp" mode="generic"/);
    const first = await xdpOnEth0();
    assert.ok(first && first.name === "bpx_xdp", `bpfproxy attached its XDP program: ${JSON.stringify(first)}`);
    await proxy.stop();
    assert.deepEqual(await xdpOnEth0(), first, "the program stays attached while no daemon runs");
    proxy = await start("second run");
    await proxy.waitForLog(/attached interface="eth0" hook="xdp" mode="generic"/);
    const second = await xdpOnEth0();
    assert.ok(
      second && second.name === "bpx_xdp" && second.id !== first.id,
      `the restart replaced its own program: ${JSON.stringify({ first, second })}`,
    );
    assert.doesNotMatch(proxy.logs, /XDP not attached/);
  });
});
