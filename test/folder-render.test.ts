// `render` from a manifest folder: the JSON shape (docs/cli.md) against golden files.
// Regenerate a golden after an intended change with: UPDATE_GOLDEN=1 bash scripts/test.sh test/folder-render.test.ts

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderFromFolder, renderJSON, toRenderedState } from "../src/render.js";
import { buildNodeModel } from "../src/model/build.js";

const fixtures = fileURLToPath(new URL("./fixtures/manifests/", import.meta.url));

function golden(name: string, actual: string): void {
  const path = fixtures + name;
  if (process.env.UPDATE_GOLDEN === "1") writeFileSync(path, actual + "\n");
  assert.equal(actual + "\n", readFileSync(path, "utf8"));
}

describe("render", () => {
  test("the demo folder renders as documented for node-a", () => {
    const json = renderJSON(renderFromFolder(fixtures + "demo", "node-a"));
    golden("demo.node-a.json", json);
    const parsed = JSON.parse(json) as {
      node: string;
      mode: string;
      frontends: Array<{ portName: string; address: string; port: number; protocol: string }>;
    };
    assert.deepEqual(Object.keys(parsed), ["node", "mode", "frontends"]);
    assert.deepEqual(
      parsed.frontends.map((f) => `${f.portName} ${f.address}:${f.port}/${f.protocol}`),
      ["dns 10.96.0.10:53/UDP", "http 10.96.0.10:80/TCP"],
    );
  });

  test("every frontend has the documented keys in the documented order", () => {
    const parsed = JSON.parse(renderJSON(renderFromFolder(fixtures + "golden", "node-a"))) as {
      frontends: Array<Record<string, unknown>>;
    };
    assert.ok(parsed.frontends.length > 0);
    for (const f of parsed.frontends) {
      assert.deepEqual(Object.keys(f), [
        "service",
        "portName",
        "type",
        "address",
        "port",
        "protocol",
        "scope",
        "sessionAffinity",
        "algorithm",
        "backends",
      ]);
      for (const b of f.backends as Array<Record<string, unknown>>)
        assert.deepEqual(Object.keys(b), ["address", "port", "state", "nodeLocal"]);
    }
  });

  test("the golden folder matches its golden files for node-a and for node-b", () => {
    golden("golden.node-a.json", renderJSON(renderFromFolder(fixtures + "golden", "node-a")));
    golden("golden.node-b.json", renderJSON(renderFromFolder(fixtures + "golden", "node-b")));
  });

  test("nodePortAddresses and mode options reach the output", () => {
    const state = renderFromFolder(fixtures + "golden", "node-a", { nodePortAddresses: ["10.0.0.0/8"], mode: "ipvs" });
    assert.equal(state.mode, "ipvs");
    assert.equal(state.frontends.filter((f) => f.type === "NodePort").length, 0);
  });

  test("renderJSON sorts and orders keys whatever the input looks like", () => {
    const model = buildNodeModel({
      services: [],
      endpointSlices: [],
      nodeName: "n",
    });
    const state = toRenderedState(model);
    state.frontends.push(
      {
        backends: [
          { nodeLocal: false, state: "active", port: 2, address: "10.0.0.10" },
          { nodeLocal: false, state: "active", port: 1, address: "10.0.0.9" },
        ],
        algorithm: "random",
        sessionAffinity: { type: "None" },
        scope: "internal",
        protocol: "TCP",
        port: 80,
        address: "10.96.0.2",
        type: "ClusterIP",
        portName: "",
        service: "b/x",
      },
      {
        service: "a/x",
        portName: "",
        type: "ClusterIP",
        address: "10.96.0.1",
        port: 80,
        protocol: "TCP",
        scope: "internal",
        sessionAffinity: { type: "None" },
        algorithm: "random",
        backends: [],
      },
    );
    const parsed = JSON.parse(renderJSON(state)) as {
      frontends: Array<{ service: string; backends: Array<{ address: string }> }>;
    };
    assert.deepEqual(
      parsed.frontends.map((f) => f.service),
      ["a/x", "b/x"],
    );
    assert.deepEqual(
      parsed.frontends[1]!.backends.map((b) => b.address),
      ["10.0.0.9", "10.0.0.10"],
    );
    assert.equal(state.frontends[0]!.service, "b/x", "renderJSON must not reorder its input");
  });
});
