// The BPF data plane against the real kernel, without attaching anything: it mounts a bpffs
// where there is none, pins its maps, writes the model, and a second instance on the same pins
// (a daemon restart) restores that state without rewriting or flushing it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as native from "../src/native/index.js";
import { BpfDataplane, pinPaths } from "../src/dataplane/bpf/index.js";
import { cleanup, readStatus } from "../src/dataplane/bpf/status.js";
import type { NodeModel } from "../src/model/types.js";
import { buildNodeModel } from "../src/model/build.js";
import { ep, slice, svc } from "./model-helpers.js";
import { registry } from "../src/metrics.js";
import type { IpvsHost } from "../src/dataplane/ipvs/index.js";

assert.equal(process.getuid?.(), 0, "data plane tests load BPF programs: run them as root");

const model: NodeModel = {
  node: "node-t",
  frontends: [
    {
      service: "default/web",
      portName: "http",
      type: "ClusterIP",
      address: "10.96.0.10",
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: [{ address: "10.244.1.5", port: 8080, state: "active", nodeLocal: true }],
    },
  ],
  extras: [{ retainedBackends: [], sourceRanges: [] }],
};

// No devices and no pod-interface globs: nothing is attached anywhere.
const options = (bpffs: string) => ({
  nodeName: "node-t",
  bpffs,
  devices: [],
  podInterfaces: [],
  clusterCIDRs: ["10.244.0.0/16"],
});

test("mounts a bpffs, pins, writes, and a restart restores without rewriting", async () => {
  const base = mkdtempSync(join(tmpdir(), "bpfproxy-dp-"));
  const bpffs = join(base, "pins");
  try {
    assert.equal(native.isBpffs(base), false);
    const first = new BpfDataplane(options(bpffs));
    await first.start();
    assert.equal(native.isBpffs(bpffs), true, "the data plane mounted a bpffs where there was none");
    assert.ok(
      pinPaths(bpffs).every((p) => existsSync(p)),
      "every map is pinned",
    );
    assert.deepEqual(first.attachments(), []);
    const res = await first.sync(model);
    assert.ok(res.upserts > 0);
    await first.stop();

    const st = readStatus(bpffs);
    assert.equal(st.node, "node-t");
    assert.deepEqual(st.frontends, model.frontends);

    const second = new BpfDataplane(options(bpffs));
    await second.start();
    assert.deepEqual(readStatus(bpffs).frontends, model.frontends, "start never flushes");
    const writes = (r: { upserts: number; deletes: number; skipped: unknown[] }) => ({
      upserts: r.upserts,
      deletes: r.deletes,
      skipped: r.skipped,
    });
    assert.deepEqual(
      writes(await second.sync(model)),
      { upserts: 0, deletes: 0, skipped: [] },
      "restored state needs no writes",
    );
    assert.deepEqual(writes(await second.sync(model, { full: true })), { upserts: 0, deletes: 0, skipped: [] });
    await second.stop();

    const removed = cleanup(bpffs);
    assert.equal(removed.unpinned.length, pinPaths(bpffs).length);
    assert.ok(pinPaths(bpffs).every((p) => !existsSync(p)));
  } finally {
    try {
      native.umount(join(base, "pins"));
    } catch {
      // not mounted
    }
    rmSync(base, { recursive: true, force: true });
  }
});

test("small configured maps: the Services that fit are programmed whole, the others named; removing one makes room", async () => {
  const base = mkdtempSync(join(tmpdir(), "bpfproxy-dp-"));
  const bpffs = join(base, "pins");
  const svc = (i: number) => ({
    ...model.frontends[0]!,
    service: `default/s${i}`,
    address: `10.96.1.${i}`,
    backends: Array.from({ length: 5 }, (_, j) => ({
      address: `10.244.${i}.${j + 1}`,
      port: 8080,
      state: "active" as const,
      nodeLocal: false,
    })),
  });
  const m = (ids: number[]): NodeModel => ({
    node: "node-t",
    frontends: ids.map(svc),
    extras: ids.map(() => ({ retainedBackends: [], sourceRanges: [] })),
  });
  try {
    const dp = new BpfDataplane({
      ...options(bpffs),
      mapSizes: {
        services: 16,
        backends: 64,
        frontends: 16,
        conntrack: 1024,
        affinity: 64,
        services6: 32,
        backends6: 48,
        conntrack6: 512,
        affinity6: 128,
      },
    });
    await dp.start();
    const r1 = await dp.sync(m([1, 2, 3]));
    assert.deepEqual(
      r1.notProgrammed?.map((n) => [n.service, n.maps]),
      [["default/s3", ["bpx_svc_v2"]]],
    );
    const st = readStatus(bpffs);
    assert.equal(st.maps["bpx_svc_v2"]!.max, 16);
    // The IPv6 maps take their own sizes; the IPv6 NAT table follows IPv6 conntrack, as IPv4's does.
    assert.deepEqual(
      ["bpx_svc6_v1", "bpx_backend6_v1", "bpx_ct6_v1", "bpx_snat6_v1", "bpx_affinity6_v1"].map((n) => st.maps[n]?.max),
      [32, 48, 512, 512, 128],
    );
    assert.deepEqual(
      st.frontends.map((f) => `${f.service}:${f.backends.length}`),
      ["default/s1:5", "default/s2:5", "default/s3:0"],
      "s3's frontend without backends (map-full: rejected), in the one entry left",
    );
    const r2 = await dp.sync(m([2, 3]));
    assert.deepEqual(r2.notProgrammed, []);
    assert.deepEqual(
      readStatus(bpffs).frontends.map((f) => `${f.service}:${f.backends.length}`),
      ["default/s2:5", "default/s3:5"],
    );
    await dp.stop();
    cleanup(bpffs);
  } finally {
    try {
      native.umount(bpffs);
    } catch {
      // not mounted
    }
    rmSync(base, { recursive: true, force: true });
  }
});

test("a dual-stack model: both families' frontends are programmed, the IPv6 ones into the IPv6 maps; nothing skipped or warned", async () => {
  const base = mkdtempSync(join(tmpdir(), "bpfproxy-dp-"));
  const bpffs = join(base, "pins");
  const warnings: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk: string | Uint8Array, ...rest: never[]) => {
    // A warning (klog's "W" lines) about IPv6 or a frontend: one the data plane could not program would be one.
    if (/^W.*(IPv6|frontend)/i.test(String(chunk))) warnings.push(String(chunk));
    return write(chunk, ...rest);
  };
  try {
    const dual = buildNodeModel({
      services: [
        svc({ type: "NodePort", clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10", "fd00:96::10"] }),
        svc({ name: "v6only", clusterIP: "fd00:96::11" }),
      ],
      endpointSlices: [
        slice([ep("10.244.1.5")], { name: "web-v4" }),
        slice([ep("fd00:10:244::1:5")], { name: "web-v6", addressType: "IPv6" }),
      ],
      nodeName: "node-t",
      config: { nodeIPs: ["192.0.2.11", "2001:db8::11"] },
    });
    const dp = new BpfDataplane(options(bpffs));
    await dp.start();
    const res = await dp.sync(dual);
    assert.deepEqual(res.skipped, []);
    assert.deepEqual(
      readStatus(bpffs)
        .frontends.map((f) => `${f.type} ${f.address}:${f.port} ${f.backends.map((b) => b.address).join(",")}`)
        .sort(),
      [
        "ClusterIP 10.96.0.10:80 10.244.1.5",
        "ClusterIP fd00:96::10:80 fd00:10:244::1:5",
        "ClusterIP fd00:96::11:80 ",
        "NodePort 192.0.2.11:30080 10.244.1.5",
        "NodePort 2001:db8::11:30080 fd00:10:244::1:5",
      ],
    );
    await dp.sync(dual, { full: true });
    assert.deepEqual(warnings, []);
    await dp.stop();
    cleanup(bpffs);
  } finally {
    process.stderr.write = write;
    try {
      native.umount(bpffs);
    } catch {
      // not mounted
    }
    rmSync(base, { recursive: true, force: true });
  }
});

test("SCTP: a port-keeping frontend is programmed; one with a port rewrite goes to IPVS, and without IPVS is refused, warned about and counted", async () => {
  const base = mkdtempSync(join(tmpdir(), "bpfproxy-dp-"));
  const bpffs = join(base, "pins");
  const warnings: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk: string | Uint8Array, ...rest: never[]) => {
    if (/SCTP/.test(String(chunk))) warnings.push(String(chunk));
    return write(chunk, ...rest);
  };
  const sctp = (name: string, ip: string, targetPort: number) =>
    svc({ name, clusterIP: ip, ports: [{ name: "sig", port: 3868, targetPort, protocol: "SCTP" }] });
  const sctpSlice = (name: string, port: number) =>
    slice([ep("10.244.1.5")], { name: `${name}-1`, service: name, ports: [{ name: "sig", port, protocol: "SCTP" }] });
  const m = buildNodeModel({
    services: [sctp("keep", "10.96.0.40", 3868), sctp("rewrite", "10.96.0.41", 9000)],
    endpointSlices: [sctpSlice("keep", 3868), sctpSlice("rewrite", 9000)],
    nodeName: "node-t",
  });
  // The kernel's IPVS as a host without it answers (the 6.1 VM has it: test/vm/sctp.vmtest.ts serves through it).
  const noIpvs = {
    ipvs: { ipvsAvailable: () => ({ ok: false, reason: "no ip_vs here" }) },
    run: async () => ({ ok: false, out: "", err: "not called" }),
    sysctl: () => undefined,
  } as unknown as IpvsHost;
  try {
    for (const sctpIpvs of [undefined, { scheduler: "rr", host: noIpvs }]) {
      const dp = new BpfDataplane({ ...options(bpffs), sctpIpvs });
      await dp.start();
      const res = await dp.sync(m);
      assert.deepEqual(
        res.skipped.map((s) => `${s.service} ${s.address}:${s.port}/${s.protocol}`),
        ["default/rewrite 10.96.0.41:3868/SCTP"],
      );
      assert.match(
        res.skipped[0]!.reason,
        sctpIpvs
          ? /^SCTP, served by IPVS: port 3868 -> 9000 .*; refused: IPVS unavailable \(ipvs mode: the kernel's IPVS is not available: no ip_vs here\)$/
          : /refused: IPVS unavailable \(the IPVS hand-over is not configured\)$/,
      );
      assert.deepEqual(
        readStatus(bpffs).frontends.map(
          (f) => `${f.address}:${f.port}/${f.protocol} ${f.backends.map((b) => `${b.address}:${b.port}`).join(",")}`,
        ),
        ["10.96.0.40:3868/SCTP 10.244.1.5:3868"],
      );
      assert.match(
        await registry.getSingleMetricAsString("bpfproxy_sctp_frontends_not_in_bpf"),
        /bpfproxy_sctp_frontends_not_in_bpf\{served_by="none"\} 1$/m,
      );
      // Warned once, not again while the same frontends stay refused.
      await dp.sync(m, { full: true });
      assert.equal(warnings.filter((w) => /SCTP frontends refused/.test(w)).length, 1, warnings.join(""));
      warnings.length = 0;
      await dp.stop();
      cleanup(bpffs);
    }
  } finally {
    process.stderr.write = write;
    try {
      native.umount(bpffs);
    } catch {
      // not mounted
    }
    rmSync(base, { recursive: true, force: true });
  }
});
