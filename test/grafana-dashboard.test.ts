// deploy/grafana/bpfproxy-dashboard.json (issue 19 item 4): it parses as a Grafana dashboard, and every query
// names only metrics the daemon registers (the per-Service counters bpfproxy_service_* / bpfproxy_backend_*
// included): a renamed metric fails here instead of leaving an empty panel.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { packagePath } from "../src/paths.js";
// The daemon's modules register their metrics on import (src/metrics.ts's registry and beside it).
import "../src/daemon/run.js";
import { registry } from "../src/metrics.js";

/** Per-Service and per-backend counters of issue 19 item 3 (docs/observability.md lists them). */
const PER_SERVICE_METRICS = [
  "bpfproxy_service_connections_total",
  "bpfproxy_service_packets_total",
  "bpfproxy_service_bytes_total",
  "bpfproxy_service_drops_total",
  "bpfproxy_backend_connections_total",
  "bpfproxy_backend_packets_total",
  "bpfproxy_backend_bytes_total",
];

interface Target {
  expr: string;
  refId: string;
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
}

const dashboard = JSON.parse(readFileSync(packagePath("deploy/grafana/bpfproxy-dashboard.json"), "utf8")) as {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; query?: unknown }[] };
};

async function exported(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    out.add(m.name);
    // A histogram is queried through its series.
    if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) out.add(m.name + s);
  }
  return out;
}

describe("Grafana dashboard", () => {
  test("is a dashboard: uid, title, panels with unique ids on the 24-column grid, a data source variable", () => {
    assert.equal(dashboard.uid, "bpfproxy");
    assert.ok(dashboard.schemaVersion >= 30);
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: inside the grid`);
      if (p.type !== "row") assert.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    }
    assert.deepEqual(
      dashboard.templating.list.map((v) => v.name),
      ["datasource", "instance"],
    );
  });

  test("every query names metrics the daemon exports, and each is used", async () => {
    const known = await exported();
    const used = new Set<string>();
    for (const p of dashboard.panels)
      for (const t of p.targets ?? []) {
        const names = t.expr.match(/\b(?:kubeproxy|bpfproxy)_[a-z0-9_]+/g) ?? [];
        assert.ok(names.length > 0, `${p.title}/${t.refId}: names a metric`);
        for (const n of names) {
          assert.ok(known.has(n), `${p.title}: ${n} is not a metric bpfproxy exports`);
          used.add(n);
        }
        // Balanced brackets: a typo in a hand edit would otherwise only show in Grafana.
        for (const [open, close] of ["()", "{}", "[]"]) {
          const n = (c: string) => t.expr.split(c).length - 1;
          assert.equal(n(open!), n(close!), `${p.title}: balanced ${open}${close} in ${t.expr}`);
        }
      }
    // What the issue asks the dashboard to show.
    for (const m of [
      "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
      "kubeproxy_network_programming_duration_seconds_bucket",
      "bpfproxy_map_entries",
      "bpfproxy_map_max_entries",
      "bpfproxy_datapath_packets_total",
      ...PER_SERVICE_METRICS,
    ])
      assert.ok(used.has(m), `the dashboard shows ${m}`);
  });
});
