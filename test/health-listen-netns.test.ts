// Where the health (--healthz-bind-address), metrics (--metrics-bind-address) and health-check node port
// servers listen, per family, probed over real sockets: the servers run in a dual-stack lab node's namespace
// (test/fixtures/health-listeners-main.ts, as the daemon starts them) and are asked from the other node over
// IPv4 and IPv6. Nothing listens in the root namespace. Needs root (builds network namespaces); fails rather
// than skips without it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { ChildProcess } from "node:child_process";
import { labFileHooks, netnsWithPrefix } from "./fixtures/lab-checks.js";
import { Lab, type LabSpec } from "../src/lab/index.js";
import { healthCheckBindAddresses } from "../src/health/index.js";
import { resolveNodeContext } from "../src/model/build.js";

const PREFIX = `bph${process.pid}-`;
const T = { timeout: 60_000 };
const A4 = "192.0.2.11";
const A6 = "2001:db8::a";
/** A second IPv6 address of node-a that nodePortAddresses below does not select. */
const OTHER6 = "2001:db8:1::a";
const HC_PORT = 30456;

function spec(prefix: string): LabSpec {
  return {
    prefix,
    nodes: [
      { name: "node-a", ip: A4, podCIDR: "10.244.1.0/24", ip6: A6, podCIDR6: "fd00:10:244:1::/64", pods: [] },
      {
        name: "node-b",
        ip: "192.0.2.12",
        podCIDR: "10.244.2.0/24",
        ip6: "2001:db8::b",
        podCIDR6: "fd00:10:244:2::/64",
        pods: [],
      },
    ],
  };
}

/** GET from inside a namespace: "<status> <body>" or "ERR <code>"; bounded (3 s per request). */
const CLIENT = `
const http = require("node:http");
const req = http.get(process.argv[1], { agent: false, timeout: 3000 }, (res) => {
  let b = ""; res.setEncoding("utf8"); res.on("data", (c) => (b += c));
  res.on("end", () => { process.stdout.write(res.statusCode + " " + b); });
});
req.on("timeout", () => req.destroy(Object.assign(new Error("timeout"), { code: "TIMEOUT" })));
req.on("error", (e) => process.stdout.write("ERR " + (e.code || e.message)));
`;

const fixture = fileURLToPath(new URL("./fixtures/health-listeners-main.ts", import.meta.url));

labFileHooks(PREFIX);

describe("health, metrics and health check ports per family", () => {
  let lab: Lab | undefined;
  const p = `${PREFIX}m-`;

  before(async () => {
    lab = await Lab.create(spec(p));
    await lab.run("node-a", ["ip", "-6", "addr", "add", `${OTHER6}/128`, "dev", "lo", "nodad"]);
  });

  after(async () => {
    await lab?.destroy();
    assert.deepEqual(netnsWithPrefix(p), []);
  });

  const L = (): Lab => {
    assert.ok(lab, "lab was not created");
    return lab;
  };

  async function get(ns: string, host: string, port: number, path: string): Promise<string> {
    const h = host.includes(":") ? `[${host}]` : host;
    const r = await L().exec(ns, [process.execPath, "-e", CLIENT, `http://${h}:${port}${path}`], { timeoutMs: 10_000 });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  /** Starts the servers in node-a; resolves with where they listen; stop() ends them (bounded). */
  async function servers(args: { healthz: string; metrics: string; hcBind?: string[] }) {
    const child: ChildProcess = L().spawn("node-a", [
      process.execPath,
      "--import",
      import.meta.resolve("tsx"),
      fixture,
      JSON.stringify({ ...args, hcPort: HC_PORT }),
    ]);
    let stderr = "";
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    const lines = createInterface({ input: child.stdout! });
    const first = await Promise.race([
      once(lines, "line").then(([l]) => l as string),
      once(child, "exit").then(() => {
        throw new Error(`servers exited: ${stderr}`);
      }),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`servers not up in 20 s: ${stderr}`)), 20_000),
      ),
    ]);
    const info = JSON.parse(first) as {
      healthz: { address: string; port: number } | null;
      metrics: { address: string; port: number } | null;
      hc: { opened: unknown[]; failed: Array<{ error: string }> };
    };
    const stop = async () => {
      if (child.exitCode !== null) return;
      const exited = once(child, "exit");
      child.stdin!.end();
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
    };
    return { info, stop };
  }

  test(
    "defaults: 0.0.0.0:10256 answers on both families (Go's wildcard), 127.0.0.1:10249 on IPv4 loopback only",
    T,
    async () => {
      const s = await servers({ healthz: "0.0.0.0:10256", metrics: "127.0.0.1:10249" });
      try {
        assert.deepEqual(s.info.healthz, { address: "::", family: "IPv6", port: 10256 });
        assert.match(await get("node-b", A4, 10256, "/healthz"), /^200 \{"lastUpdated"/);
        assert.match(await get("node-b", A6, 10256, "/healthz"), /^200 \{"lastUpdated"/);
        assert.match(await get("node-b", A6, 10256, "/livez"), /^200 /);
        assert.match(await get("node-a", "127.0.0.1", 10249, "/metrics"), /^200 [^]*kubeproxy_/);
        assert.equal(await get("node-a", "::1", 10249, "/metrics"), "ERR ECONNREFUSED");
        assert.equal(await get("node-b", A4, 10249, "/metrics"), "ERR ECONNREFUSED");
        // No nodePortAddresses: one dual-stack wildcard for the health check port.
        assert.deepEqual(s.info.hc.failed, []);
        for (const host of [A4, A6]) {
          const r = await get("node-b", host, HC_PORT, "/");
          assert.match(r, /^200 \{\n\t"service": \{\n\t\t"namespace": "default",\n\t\t"name": "web"/, host);
        }
      } finally {
        await s.stop();
      }
    },
  );

  test("IPv6 forms: [::]:port is dual-stack too; [::1] and an IPv6 node address answer over IPv6 only", T, async () => {
    let s = await servers({ healthz: "[::]:10256", metrics: `[${A6}]:10249` });
    try {
      assert.match(await get("node-b", A4, 10256, "/healthz"), /^200 /);
      assert.match(await get("node-b", A6, 10256, "/healthz"), /^200 /);
      assert.match(await get("node-b", A6, 10249, "/metrics"), /^200 [^]*kubeproxy_/);
      assert.equal(await get("node-b", A4, 10249, "/metrics"), "ERR ECONNREFUSED");
    } finally {
      await s.stop();
    }
    // The defaults with an IPv6 bindAddress.
    s = await servers({ healthz: "[::]:10256", metrics: "[::1]:10249" });
    try {
      assert.match(await get("node-a", "::1", 10249, "/metrics"), /^200 /);
      assert.equal(await get("node-a", "127.0.0.1", 10249, "/metrics"), "ERR ECONNREFUSED");
    } finally {
      await s.stop();
    }
  });

  test("an IPv4 healthz address answers over IPv4 only", T, async () => {
    const s = await servers({ healthz: `${A4}:10256`, metrics: "" });
    try {
      assert.equal(s.info.metrics, null, '"" runs no metrics server');
      assert.match(await get("node-b", A4, 10256, "/healthz"), /^200 /);
      assert.equal(await get("node-b", A6, 10256, "/healthz"), "ERR ECONNREFUSED");
    } finally {
      await s.stop();
    }
  });

  const nodeIPs = [A4, A6, OTHER6];
  const bindFor = (nodePortAddresses: string[]) =>
    healthCheckBindAddresses(
      nodePortAddresses,
      resolveNodeContext({ nodes: [], nodeName: "node-a", config: { nodePortAddresses, nodeIPs } }),
    );

  test(
    "health check port, nodePortAddresses naming IPv6 only: the selected IPv6 address and every IPv4 one",
    T,
    async () => {
      const bind = bindFor(["2001:db8::/64"]);
      assert.deepEqual(bind, ["0.0.0.0/0", A6]);
      const s = await servers({ healthz: "", metrics: "", hcBind: bind });
      try {
        assert.equal(s.info.healthz, null, '"" runs no health server');
        assert.deepEqual(s.info.hc.failed, []);
        assert.match(await get("node-b", A6, HC_PORT, "/"), /^200 \{/);
        assert.match(await get("node-b", A4, HC_PORT, "/"), /^200 \{/);
        assert.match(await get("node-a", "127.0.0.1", HC_PORT, "/"), /^200 \{/, "IPv4 wildcard");
        assert.equal(await get("node-a", OTHER6, HC_PORT, "/"), "ERR ECONNREFUSED", "IPv6 address not selected");
        assert.equal(await get("node-a", "::1", HC_PORT, "/"), "ERR ECONNREFUSED");
      } finally {
        await s.stop();
      }
    },
  );

  test("health check port, nodePortAddresses naming IPv4 only: that address and every IPv6 one", T, async () => {
    const bind = bindFor([`${A4}/32`]);
    assert.deepEqual(bind, [A4, "::/0"]);
    const s = await servers({ healthz: "", metrics: "", hcBind: bind });
    try {
      assert.deepEqual(s.info.hc.failed, []);
      assert.match(await get("node-b", A4, HC_PORT, "/"), /^200 \{/);
      assert.match(await get("node-b", A6, HC_PORT, "/"), /^200 \{/);
      assert.match(await get("node-a", OTHER6, HC_PORT, "/"), /^200 \{/, "IPv6 wildcard");
      assert.equal(await get("node-a", "127.0.0.1", HC_PORT, "/"), "ERR ECONNREFUSED", "IPv4 address not selected");
    } finally {
      await s.stop();
    }
  });

  test("health check port, nodePortAddresses naming both families: only the selected addresses", T, async () => {
    const bind = bindFor(["192.0.2.0/24", `${OTHER6}/128`]);
    assert.deepEqual(bind, [A4, OTHER6]);
    const s = await servers({ healthz: "", metrics: "", hcBind: bind });
    try {
      assert.match(await get("node-b", A4, HC_PORT, "/"), /^200 \{/);
      assert.match(await get("node-a", OTHER6, HC_PORT, "/"), /^200 \{/);
      assert.equal(await get("node-b", A6, HC_PORT, "/"), "ERR ECONNREFUSED");
      assert.equal(await get("node-a", "127.0.0.1", HC_PORT, "/"), "ERR ECONNREFUSED");
    } finally {
      await s.stop();
    }
  });
});
