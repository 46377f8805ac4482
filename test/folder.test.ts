// The manifest-folder source: file formats, robustness against bad files, and change detection. All waits
// are bounded.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { invalidObjectsTotal } from "../src/metrics.js";
import { FolderSource, FolderState, isUnchanged, loadFolderSync, readFolder } from "../src/sources/folder.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(files: Record<string, string> = {}): string {
  const d = mkdtempSync(join(tmpdir(), "bpfproxy-folder-"));
  dirs.push(d);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const SERVICE = (name: string, ip: string, ns = "default") => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ${ns}
spec:
  clusterIP: ${ip}
  ports:
    - name: http
      port: 80
      targetPort: 8080
`;

const SLICE = (name: string, svc: string, addr: string) => `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}
  namespace: default
  labels:
    kubernetes.io/service-name: ${svc}
addressType: IPv4
ports:
  - name: http
    port: 8080
endpoints:
  - addresses: [${addr}]
`;

const names = (xs: { metadata: { name: string } }[]) => xs.map((x) => x.metadata.name).sort();

async function parseErrors(): Promise<number> {
  const m = await invalidObjectsTotal.get();
  return m.values.find((v) => v.labels.kind === "File" && v.labels.reason === "parse_error")?.value ?? 0;
}

/** Resolves on the next "change", rejects after `ms`. */
function nextChange(src: FolderSource, ms: number): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      src.off("change", on);
      reject(new Error(`no change within ${ms} ms`));
    }, ms);
    const on = () => {
      clearTimeout(timer);
      src.off("change", on);
      resolve(Date.now() - started);
    };
    src.on("change", on);
  });
}

/** Resolves true if a "change" arrives within `ms`, false otherwise. */
function changeWithin(src: FolderSource, ms: number): Promise<boolean> {
  return nextChange(src, ms).then(
    () => true,
    () => false,
  );
}

describe("loadFolderSync (one-shot read)", () => {
  test("reads multi-document YAML", () => {
    const d = tempDir({
      "web.yaml": `${SERVICE("web", "10.96.0.10")}---\n${SLICE("web-1", "web", "10.244.1.5")}---\n`,
    });
    const snap = loadFolderSync(d);
    assert.deepEqual(names(snap.services), ["web"]);
    assert.deepEqual(names(snap.endpointSlices), ["web-1"]);
  });

  test("reads kind: List and typed lists whose items carry no kind", () => {
    const list = {
      apiVersion: "v1",
      kind: "List",
      items: [
        {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: "a", namespace: "default" },
          spec: { clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
        },
        { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } },
      ],
    };
    const typed = {
      apiVersion: "v1",
      kind: "ServiceList",
      items: [
        { metadata: { name: "b", namespace: "default" }, spec: { clusterIP: "10.96.0.2", ports: [{ port: 80 }] } },
      ],
    };
    const d = tempDir({ "list.yaml": JSON.stringify(list), "typed.json": JSON.stringify(typed) });
    const snap = loadFolderSync(d);
    assert.deepEqual(names(snap.services), ["a", "b"]);
    assert.deepEqual(names(snap.nodes), ["node-a"]);
  });

  test("reads JSON files and .yml files", () => {
    const d = tempDir({
      "a.json": JSON.stringify({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "a", namespace: "default" },
        spec: { clusterIP: "10.96.0.1", ports: [{ port: 80 }] },
      }),
      "b.yml": SERVICE("b", "10.96.0.2"),
    });
    assert.deepEqual(names(loadFolderSync(d).services), ["a", "b"]);
  });

  test("a JSON List as kubectl writes it (items before kind, indented) loads every item", () => {
    const svc = (name: string, ip: string) => ({
      metadata: { name, namespace: "default" },
      spec: { clusterIP: ip, ports: [{ port: 80 }] },
    });
    const d = tempDir({
      "cluster.json": JSON.stringify(
        { apiVersion: "v1", items: [svc("a", "10.96.0.1"), svc("b", "10.96.0.2")], kind: "ServiceList", metadata: {} },
        null,
        4,
      ),
    });
    assert.deepEqual(names(loadFolderSync(d).services), ["a", "b"]);
  });

  test("a JSON List with a syntax error in a late item: a parse error only, none of its objects", async () => {
    const before = await parseErrors();
    const invalidBefore = (await invalidObjectsTotal.get()).values.reduce((n, v) => n + v.value, 0);
    const good =
      '{"kind":"Service","metadata":{"name":"a","namespace":"default"},"spec":{"clusterIP":"10.96.0.1","ports":[{"port":80}]}}';
    const invalid =
      '{"kind":"Service","metadata":{"name":"b","namespace":"default"},"spec":{"clusterIP":"bad","ports":[{"port":80}]}}';
    const d = tempDir({ "list.json": `{"kind":"List","items":[${good},${invalid},{"kind":"Service",}]}` });
    assert.deepEqual(names(loadFolderSync(d).services), []);
    assert.equal(await parseErrors(), before + 1);
    const invalidAfter = (await invalidObjectsTotal.get()).values.reduce((n, v) => n + v.value, 0);
    assert.equal(invalidAfter, invalidBefore + 1, "only the file is counted, not the invalid item before the error");
  });

  test("a file that fails to parse is counted and the other files still load", async () => {
    const before = await parseErrors();
    const d = tempDir({
      "good.yaml": SERVICE("good", "10.96.0.1"),
      "broken.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n",
      "broken.json": "{ not json",
    });
    assert.deepEqual(names(loadFolderSync(d).services), ["good"]);
    assert.equal(await parseErrors(), before + 2);
  });

  test("Endpoints objects become slices, and a missing namespace means default", () => {
    const d = tempDir({
      "ep.yaml": `apiVersion: v1
kind: Endpoints
metadata:
  name: ext
subsets:
  - addresses: [{ip: 192.0.2.50}]
    notReadyAddresses: [{ip: 192.0.2.51}]
    ports: [{name: http, port: 8080}]
`,
    });
    const [s, ...rest] = loadFolderSync(d).endpointSlices;
    assert.equal(rest.length, 0);
    assert.equal(s!.metadata.namespace, "default");
    assert.equal(s!.metadata.labels["kubernetes.io/service-name"], "ext");
    assert.deepEqual(
      s!.endpoints.map((e) => [e.addresses[0], e.conditions.ready]),
      [
        ["192.0.2.50", true],
        ["192.0.2.51", false],
      ],
    );
  });

  test("other extensions, dot-files and subfolders are not read", () => {
    const d = tempDir({
      "a.yaml": SERVICE("a", "10.96.0.1"),
      "b.txt": SERVICE("b", "10.96.0.2"),
      ".c.yaml": SERVICE("c", "10.96.0.3"),
    });
    mkdirSync(join(d, "sub"));
    writeFileSync(join(d, "sub", "d.yaml"), SERVICE("d", "10.96.0.4"));
    assert.deepEqual(names(loadFolderSync(d).services), ["a"]);
  });

  test("an object defined twice: the later file wins", () => {
    const d = tempDir({ "a.yaml": SERVICE("web", "10.96.0.1"), "b.yaml": SERVICE("web", "10.96.0.2") });
    const snap = loadFolderSync(d);
    assert.deepEqual(
      snap.services.map((s) => s.spec.clusterIP),
      ["10.96.0.2"],
    );
  });

  test("a missing folder is an error", () => {
    assert.throws(() => loadFolderSync(join(tmpdir(), "bpfproxy-does-not-exist-" + process.pid)), /does not exist/);
  });
});

describe("FolderSource (watching)", () => {
  test("start rejects for a missing folder", async () => {
    const src = new FolderSource(join(tmpdir(), "bpfproxy-does-not-exist-" + process.pid));
    await assert.rejects(src.start(), /does not exist/);
    await src.stop();
  });

  test("synced resolves after the first read, with the folder's objects", async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d);
    try {
      await src.start();
      await src.synced();
      assert.deepEqual(names(src.snapshot().services), ["web"]);
    } finally {
      await src.stop();
    }
  });

  test("a new file, an edit and a removal are each seen within 1 s", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d, { debounceMs: 100 });
    try {
      await src.start();
      let change = nextChange(src, 1000);
      writeFileSync(join(d, "api.yaml"), SERVICE("api", "10.96.0.11"));
      await change;
      assert.deepEqual(names(src.snapshot().services), ["api", "web"]);

      change = nextChange(src, 1000);
      writeFileSync(join(d, "api.yaml"), SERVICE("api", "10.96.0.12"));
      await change;
      assert.deepEqual(src.snapshot().services.find((s) => s.metadata.name === "api")!.spec.clusterIP, "10.96.0.12");

      change = nextChange(src, 1000);
      unlinkSync(join(d, "api.yaml"));
      await change;
      assert.deepEqual(names(src.snapshot().services), ["web"]);
    } finally {
      await src.stop();
    }
  });

  test("rewriting a file with the same objects (a comment) emits no change", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d, { debounceMs: 50 });
    try {
      await src.start();
      const seen = changeWithin(src, 600);
      writeFileSync(join(d, "web.yaml"), "# a comment\n" + SERVICE("web", "10.96.0.10"));
      assert.equal(await seen, false);
    } finally {
      await src.stop();
    }
  });

  test(
    "a file that becomes unparsable keeps its last good objects until it is fixed",
    { timeout: 10_000 },
    async () => {
      const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10"), "api.yaml": SERVICE("api", "10.96.0.11") });
      const src = new FolderSource(d, { debounceMs: 50 });
      try {
        await src.start();
        const before = await parseErrors();
        const quiet = changeWithin(src, 600);
        writeFileSync(join(d, "web.yaml"), "kind: Service\nmetadata: {name: [\n");
        assert.equal(await quiet, false);
        assert.deepEqual(names(src.snapshot().services), ["api", "web"]);
        assert.equal(await parseErrors(), before + 1);

        const change = nextChange(src, 1000);
        writeFileSync(join(d, "web.yaml"), SERVICE("web", "10.96.0.20"));
        await change;
        assert.equal(src.snapshot().services.find((s) => s.metadata.name === "web")!.spec.clusterIP, "10.96.0.20");
      } finally {
        await src.stop();
      }
    },
  );

  test(
    "an invalid object written later is skipped while the rest of its file applies",
    { timeout: 10_000 },
    async () => {
      const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
      const src = new FolderSource(d, { debounceMs: 50 });
      try {
        await src.start();
        const change = nextChange(src, 1000);
        writeFileSync(join(d, "more.yaml"), `${SERVICE("bad", "10.96.0.300")}---\n${SERVICE("api", "10.96.0.11")}`);
        await change;
        assert.deepEqual(names(src.snapshot().services), ["api", "web"]);
      } finally {
        await src.stop();
      }
    },
  );

  test("after stop no change is emitted", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d, { debounceMs: 50, rescanMs: 100 });
    await src.start();
    await src.stop();
    const seen = changeWithin(src, 400);
    writeFileSync(join(d, "api.yaml"), SERVICE("api", "10.96.0.11"));
    assert.equal(await seen, false);
  });

  test("the periodic rescan picks up changes as well", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    // A long debounce keeps the watcher from acting first; the 200 ms rescan must find the change.
    const src = new FolderSource(d, { debounceMs: 5_000, rescanMs: 200 });
    try {
      await src.start();
      const change = nextChange(src, 1500);
      writeFileSync(join(d, "api.yaml"), SERVICE("api", "10.96.0.11"));
      await change;
      assert.deepEqual(names(src.snapshot().services), ["api", "web"]);
    } finally {
      await src.stop();
    }
  });

  test("a rescan reads only the files whose size, times or inode changed", async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10"), "api.yaml": SERVICE("api", "10.96.0.11") });
    const state = new FolderState(d);
    assert.equal(state.apply(await readFolder(d, 0, state.knownIds())), true);
    const again = (await readFolder(d, 0, state.knownIds()))!;
    assert.deepEqual([...again.values()].map(isUnchanged), [true, true], "nothing changed: nothing read");
    assert.equal(state.apply(again), false);
    // Rewritten in place with the same size: mtime and ctime move, so it is read again.
    writeFileSync(join(d, "api.yaml"), SERVICE("api", "10.96.0.12"));
    const edited = (await readFolder(d, 0, state.knownIds()))!;
    assert.equal(isUnchanged(edited.get("api.yaml")), false);
    assert.equal(isUnchanged(edited.get("web.yaml")), true);
    assert.equal(state.apply(edited), true);
    assert.deepEqual(
      state.snapshot().services.map((s) => s.spec.clusterIP),
      ["10.96.0.12", "10.96.0.10"],
    );
  });

  test("the periodic rescan sees a same-size rewrite in place", { timeout: 10_000 }, async () => {
    const d = tempDir({ "web.yaml": SERVICE("web", "10.96.0.10") });
    const src = new FolderSource(d, { debounceMs: 5_000, rescanMs: 200, settleMs: 20 });
    try {
      await src.start();
      await new Promise((r) => setTimeout(r, 300)); // a rescan that finds nothing changed
      const change = nextChange(src, 2000);
      writeFileSync(join(d, "web.yaml"), SERVICE("web", "10.96.0.20"));
      await change;
      assert.equal(src.snapshot().services[0]!.spec.clusterIP, "10.96.0.20");
    } finally {
      await src.stop();
    }
  });
});
