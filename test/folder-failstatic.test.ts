// The manifest folder is fail-static: whatever goes wrong while reading it (the folder missing for a
// while, a file half-written, truncated, unreadable, a dangling symlink), the last good objects keep
// serving; only an existing, readable state removes objects. Every wait is bounded.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  closeSync,
  mkdirSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sourceReadErrorsTotal } from "../src/metrics.js";
import { FolderSource } from "../src/sources/folder.js";
import type { ObjectSnapshot } from "../src/sources/types.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(files: Record<string, string> = {}): string {
  const d = mkdtempSync(join(tmpdir(), "bpfproxy-failstatic-"));
  dirs.push(d);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const SERVICE = (name: string, ip: string) => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: default
spec:
  clusterIP: ${ip}
  ports:
    - name: http
      port: 80
      targetPort: 8080
`;

/** A slice whose endpoints list can be cut after any endpoint and still parse. */
const SLICE_HEAD = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: http
    port: 8080
endpoints:
`;
const SLICE_EP = (ip: string) => `  - addresses: [${ip}]\n`;

const names = (s: ObjectSnapshot) => s.services.map((x) => x.metadata.name).sort();
const endpointCount = (s: ObjectSnapshot) => s.endpointSlices.reduce((n, sl) => n + sl.endpoints.length, 0);

async function readErrors(): Promise<number> {
  const m = await sourceReadErrorsTotal.get();
  return m.values.find((v) => v.labels.source === "folder")?.value ?? 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until pred holds; bounded. */
async function until(pred: () => boolean, ms: number, what: string): Promise<number> {
  const started = Date.now();
  while (!pred()) {
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
  return Date.now() - started;
}

/** Every snapshot the source published, in order. */
function recordSnapshots(src: FolderSource): ObjectSnapshot[] {
  const seen: ObjectSnapshot[] = [];
  src.on("change", () => seen.push(src.snapshot()));
  return seen;
}

describe("manifest folder: fail-static", () => {
  test(
    "a folder that disappears keeps the last good objects; when it is back its content applies",
    { timeout: 15_000 },
    async () => {
      const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10"), "api.yaml": SERVICE("api", "10.96.0.11") });
      const src = new FolderSource(d, { debounceMs: 30, rescanMs: 200 });
      const seen = recordSnapshots(src);
      try {
        await src.start();
        const errors0 = await readErrors();
        const aside = `${d}.aside`;
        dirs.push(aside);
        renameSync(d, aside);
        for (let i = 0; i < 300 && (await readErrors()) === errors0; i++) await sleep(10);
        assert.equal(await readErrors(), errors0 + 1, "the missing folder is noticed and counted");
        await sleep(600); // several rescans while it is gone
        assert.deepEqual(names(src.snapshot()), ["api", "web"], "nothing withdrawn while the folder is missing");
        assert.ok(
          seen.every((s) => s.services.length === 2),
          "no empty snapshot was ever published",
        );
        assert.equal(await readErrors(), errors0 + 1, "one error per outage, not one per rescan");

        // Back, with one Service removed while it was away (the change is real, and applies).
        unlinkSync(join(aside, "api.yaml"));
        renameSync(aside, d);
        const ms = await until(() => names(src.snapshot()).join() === "web", 3000, "folder back");
        assert.ok(ms < 2000, `applied ${ms} ms after the folder came back`);

        // The watcher follows the new folder: an edit is seen quickly (well before a periodic rescan would matter).
        writeFileSync(join(d, "db.yaml"), SERVICE("db", "10.96.0.12"));
        await until(() => names(src.snapshot()).join() === "db,web", 2000, "edit in the returned folder");
      } finally {
        await src.stop();
      }
    },
  );

  test("a folder swapped for a new one (rename over) is followed", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d, { debounceMs: 30, rescanMs: 60_000 });
    try {
      await src.start();
      const next = `${d}.next`;
      dirs.push(next);
      mkdirSync(next);
      writeFileSync(join(next, "web.yaml"), SERVICE("web", "10.96.0.20"));
      writeFileSync(join(next, "api.yaml"), SERVICE("api", "10.96.0.21"));
      await sleep(150);
      rmSync(d, { recursive: true });
      renameSync(next, d);
      await until(() => names(src.snapshot()).join() === "api,web", 3000, "swapped folder read");
      writeFileSync(join(d, "db.yaml"), SERVICE("db", "10.96.0.22"));
      await until(() => names(src.snapshot()).length === 3, 3000, "edit after the swap");
    } finally {
      await src.stop();
    }
  });

  test("a file truncated to empty keeps its objects; deleting it removes them", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10"), "api.yaml": SERVICE("api", "10.96.0.11") });
    const src = new FolderSource(d, { debounceMs: 30 });
    try {
      await src.start();
      writeFileSync(join(d, "web.yaml"), "");
      await sleep(500);
      assert.deepEqual(names(src.snapshot()), ["api", "web"]);
      unlinkSync(join(d, "web.yaml"));
      await until(() => names(src.snapshot()).join() === "api", 2000, "deleted file");
    } finally {
      await src.stop();
    }
  });

  test("a file written in pieces is applied only once complete, never half", { timeout: 15_000 }, async () => {
    const ips = ["10.244.1.1", "10.244.1.2", "10.244.1.3", "10.244.1.4"];
    const d = tempDir({
      "web.yaml": SERVICE("web", "10.96.0.10"),
      "slice.yaml": SLICE_HEAD + ips.map(SLICE_EP).join(""),
    });
    const src = new FolderSource(d, { debounceMs: 20 });
    const seen = recordSnapshots(src);
    try {
      await src.start();
      assert.equal(endpointCount(src.snapshot()), 4);
      // Rewrite in place the way `cat > file` does: truncate, then write the pieces with pauses. Every
      // prefix that ends at a line parses as a valid slice with fewer endpoints.
      const next = ["10.244.2.1", "10.244.2.2", "10.244.2.3", "10.244.2.4"];
      for (let round = 0; round < 3; round++) {
        const fd = openSync(join(d, "slice.yaml"), "w");
        writeSync(fd, SLICE_HEAD);
        for (const ip of next) {
          await sleep(40);
          writeSync(fd, SLICE_EP(ip));
        }
        closeSync(fd);
        await until(
          () => src.snapshot().endpointSlices[0]?.endpoints[0]?.addresses[0] === "10.244.2.1",
          3000,
          "complete file applied",
        );
        assert.equal(endpointCount(src.snapshot()), 4);
        writeFileSync(join(d, "slice.yaml"), SLICE_HEAD + ips.map(SLICE_EP).join(""));
        await until(
          () => src.snapshot().endpointSlices[0]?.endpoints[0]?.addresses[0] === "10.244.1.1",
          3000,
          "restored",
        );
      }
      const partial = seen.filter((s) => endpointCount(s) !== 4);
      assert.deepEqual(partial.map(endpointCount), [], "a half-written file was published");
    } finally {
      await src.stop();
    }
  });

  test(
    "symlinks: followed (ConfigMap-style swaps apply), a dangling or unreadable one keeps the last good objects",
    { timeout: 10_000 },
    async () => {
      const store = tempDir({ "v1.yaml": SERVICE("web", "10.96.0.10"), "v2.yaml": SERVICE("web", "10.96.0.20") });
      const d = tempDir({ "api.yaml": SERVICE("api", "10.96.0.11") });
      symlinkSync(join(store, "v1.yaml"), join(d, "web.yaml"));
      const src = new FolderSource(d, { debounceMs: 30, rescanMs: 200 });
      const ip = () => src.snapshot().services.find((s) => s.metadata.name === "web")?.spec.clusterIP;
      try {
        await src.start();
        assert.equal(ip(), "10.96.0.10");
        // Atomic swap of the link, as kubelet does for ConfigMap volumes.
        symlinkSync(join(store, "v2.yaml"), join(d, ".web.tmp"));
        renameSync(join(d, ".web.tmp"), join(d, "web.yaml"));
        await until(() => ip() === "10.96.0.20", 3000, "swapped link");

        const errors0 = await readErrors();
        unlinkSync(join(store, "v2.yaml")); // the link now dangles
        await sleep(600);
        assert.equal(ip(), "10.96.0.20", "a dangling link keeps the last good objects");
        assert.ok((await readErrors()) > errors0, "counted as a read error");

        // A file whose read fails with an I/O error (root ignores permission bits, so use /proc/self/mem: EIO).
        const errors1 = await readErrors();
        symlinkSync("/proc/self/mem", join(d, ".mem.tmp"));
        renameSync(join(d, ".mem.tmp"), join(d, "web.yaml"));
        await sleep(600);
        assert.equal(ip(), "10.96.0.20", "an unreadable file keeps the last good objects");
        assert.ok((await readErrors()) > errors1, "counted as a read error");
        assert.deepEqual(names(src.snapshot()), ["api", "web"]);

        // Removing the link itself is a deletion.
        unlinkSync(join(d, "web.yaml"));
        await until(() => ip() === undefined, 3000, "removed link");
      } finally {
        await src.stop();
      }
    },
  );
});
