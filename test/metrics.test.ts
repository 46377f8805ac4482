// Metrics under kube-proxy's names, types, labels and buckets; bpfproxy's datapath metrics fed by the
// collector callback; the metrics server's endpoints. Servers on 127.0.0.1 only, bounded waits.
import { test } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import {
  registry,
  recordSync,
  recordSyncError,
  recordQueued,
  recordProgrammingLatency,
  setNoLocalEndpoints,
  setDatapathCollector,
} from "../src/metrics.js";
import { MetricsServer } from "../src/metrics-server.js";

function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, type: String(res.headers["content-type"]), body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

/** Value of one sample line, e.g. sample(text, 'x_count{ip_family="IPv4"}'). */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

function buckets(text: string, name: string, labels: string): string[] {
  const re = new RegExp(`^${name}_bucket\\{le="([^"]+)",${labels}\\}`);
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = re.exec(line);
    if (m) out.push(m[1]!);
  }
  return out;
}

// kube-proxy's metrics as exposed by kube-proxy ≥ 1.33 (pkg/proxy/metrics): name, type, HELP text.
const KUBE_PROXY_METRICS: Array<[string, string, string]> = [
  ["kubeproxy_sync_proxy_rules_duration_seconds", "histogram", "[ALPHA] SyncProxyRules latency in seconds"],
  [
    "kubeproxy_sync_full_proxy_rules_duration_seconds",
    "histogram",
    "[ALPHA] SyncProxyRules latency in seconds for full resyncs",
  ],
  [
    "kubeproxy_sync_partial_proxy_rules_duration_seconds",
    "histogram",
    "[ALPHA] SyncProxyRules latency in seconds for partial resyncs",
  ],
  [
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "gauge",
    "[ALPHA] The last time proxy rules were successfully synced",
  ],
  [
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "gauge",
    "[ALPHA] The last time a sync of proxy rules was queued",
  ],
  [
    "kubeproxy_network_programming_duration_seconds",
    "histogram",
    "[ALPHA] In Cluster Network Programming Latency in seconds",
  ],
  ["kubeproxy_sync_proxy_rules_endpoint_changes_pending", "gauge", "[ALPHA] Pending proxy rules Endpoint changes"],
  ["kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter", "[ALPHA] Cumulative proxy rules Endpoint changes"],
  ["kubeproxy_sync_proxy_rules_service_changes_pending", "gauge", "[ALPHA] Pending proxy rules Service changes"],
  ["kubeproxy_sync_proxy_rules_service_changes_total", "counter", "[ALPHA] Cumulative proxy rules Service changes"],
  [
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
    "gauge",
    "[ALPHA] Number of services with a Local traffic policy and no endpoints",
  ],
  ["kubeproxy_proxy_healthz_total", "counter", "[ALPHA] Cumulative proxy healthz HTTP status"],
  ["kubeproxy_proxy_livez_total", "counter", "[ALPHA] Cumulative proxy livez HTTP status"],
];

const BPFPROXY_METRICS: Array<[string, string]> = [
  ["bpfproxy_sync_errors_total", "counter"],
  ["bpfproxy_datapath_packets_total", "counter"],
  ["bpfproxy_datapath_bytes_total", "counter"],
  ["bpfproxy_map_entries", "gauge"],
  ["bpfproxy_map_max_entries", "gauge"],
  ["bpfproxy_invalid_objects_total", "counter"],
];

test("kube-proxy's metric names, types and help texts", async () => {
  const text = await registry.metrics();
  for (const [name, type, help] of KUBE_PROXY_METRICS) {
    assert.ok(
      text.includes(`\n# HELP ${name} ${help}\n`) || text.startsWith(`# HELP ${name} ${help}\n`),
      `HELP line of ${name}`,
    );
    assert.ok(text.includes(`# TYPE ${name} ${type}\n`), `TYPE line of ${name} (${type})`);
  }
  for (const [name, type] of BPFPROXY_METRICS)
    assert.ok(text.includes(`# TYPE ${name} ${type}\n`), `TYPE line of ${name}`);
});

test("sync histograms: kube-proxy's buckets, full vs partial, ip_family IPv4", async () => {
  recordSync({ durationSeconds: 0.003, full: true, nowMs: 1_700_000_000_000 });
  recordSync({ durationSeconds: 0.0005, full: false, nowMs: 1_700_000_001_500 });
  const text = await registry.metrics();
  const v4 = 'ip_family="IPv4"';
  assert.equal(sample(text, `kubeproxy_sync_proxy_rules_duration_seconds_count{${v4}}`), 2);
  assert.equal(sample(text, `kubeproxy_sync_full_proxy_rules_duration_seconds_count{${v4}}`), 1);
  assert.equal(sample(text, `kubeproxy_sync_partial_proxy_rules_duration_seconds_count{${v4}}`), 1);
  assert.equal(sample(text, `kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.001",${v4}}`), 1);
  assert.equal(sample(text, `kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.002",${v4}}`), 1);
  assert.equal(sample(text, `kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.004",${v4}}`), 2);
  assert.ok(Math.abs(sample(text, `kubeproxy_sync_proxy_rules_duration_seconds_sum{${v4}}`)! - 0.0035) < 1e-9);
  assert.equal(sample(text, `kubeproxy_sync_proxy_rules_last_timestamp_seconds{${v4}}`), 1_700_000_001.5);
  // ExponentialBuckets(0.001, 2, 15)
  assert.deepEqual(buckets(text, "kubeproxy_sync_proxy_rules_duration_seconds", v4), [
    "0.001",
    "0.002",
    "0.004",
    "0.008",
    "0.016",
    "0.032",
    "0.064",
    "0.128",
    "0.256",
    "0.512",
    "1.024",
    "2.048",
    "4.096",
    "8.192",
    "16.384",
    "+Inf",
  ]);
  // The data plane is IPv4 only: no IPv6 series that would suggest IPv6 is programmed.
  assert.doesNotMatch(text, /ip_family="IPv6"/);
});

test("network programming latency: kube-proxy's merged buckets", async () => {
  recordProgrammingLatency(0.3);
  recordProgrammingLatency(61);
  recordProgrammingLatency(-1); // clock skew: not recorded
  const text = await registry.metrics();
  const v4 = 'ip_family="IPv4"';
  assert.equal(sample(text, `kubeproxy_network_programming_duration_seconds_count{${v4}}`), 2);
  assert.equal(sample(text, `kubeproxy_network_programming_duration_seconds_bucket{le="0.25",${v4}}`), 0);
  assert.equal(sample(text, `kubeproxy_network_programming_duration_seconds_bucket{le="0.5",${v4}}`), 1);
  assert.equal(sample(text, `kubeproxy_network_programming_duration_seconds_bucket{le="65",${v4}}`), 2);
  const expected = ["0", "0.25", "0.5"];
  for (let s = 1; s <= 59; s++) expected.push(String(s));
  for (let s = 60; s <= 115; s += 5) expected.push(String(s));
  for (let s = 120; s <= 300; s += 30) expected.push(String(s));
  expected.push("+Inf");
  assert.deepEqual(buckets(text, "kubeproxy_network_programming_duration_seconds", v4), expected);
});

test("change counters, pending gauges, queued timestamp, no-local-endpoints gauge, sync errors", async () => {
  const before = await registry.metrics();
  const svcTotal0 = sample(before, "kubeproxy_sync_proxy_rules_service_changes_total") ?? 0;
  const epTotal0 = sample(before, "kubeproxy_sync_proxy_rules_endpoint_changes_total") ?? 0;
  const errs0 = sample(before, "bpfproxy_sync_errors_total") ?? 0;

  recordQueued("service", 1_700_000_100_000);
  recordQueued("endpoints");
  recordQueued("endpoints", 1_700_000_200_000);
  recordSyncError();
  setNoLocalEndpoints("internal", 2);
  setNoLocalEndpoints("external", 1);
  let text = await registry.metrics();
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_service_changes_total"), svcTotal0 + 1);
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"), epTotal0 + 2);
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"), 1);
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"), 2);
  assert.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"}'),
    1_700_000_200,
  );
  assert.equal(sample(text, "bpfproxy_sync_errors_total"), errs0 + 1);
  assert.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"}'),
    2,
  );
  assert.equal(
    sample(text, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"}'),
    1,
  );

  recordSync({ durationSeconds: 0.001, full: false });
  text = await registry.metrics();
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"), 0);
  assert.equal(sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"), 0);
});

test("datapath collector feeds bpfproxy_datapath_* and bpfproxy_map_*", async () => {
  let calls = 0;
  setDatapathCollector(() => {
    calls++;
    return {
      counters: { forwarded: { packets: 10, bytes: 1500 }, drop_no_backend: { packets: 2, bytes: 120 } },
      maps: { bpfproxy_services_v1: { entries: 42, max: 65536 }, bpfproxy_ct_v1: { entries: 7, max: 262144 } },
    };
  });
  let text = await registry.metrics();
  assert.equal(sample(text, 'bpfproxy_datapath_packets_total{reason="forwarded"}'), 10);
  assert.equal(sample(text, 'bpfproxy_datapath_packets_total{reason="drop_no_backend"}'), 2);
  assert.equal(sample(text, 'bpfproxy_datapath_bytes_total{reason="forwarded"}'), 1500);
  assert.equal(sample(text, 'bpfproxy_datapath_bytes_total{reason="drop_no_backend"}'), 120);
  assert.equal(sample(text, 'bpfproxy_map_entries{map="bpfproxy_services_v1"}'), 42);
  assert.equal(sample(text, 'bpfproxy_map_max_entries{map="bpfproxy_ct_v1"}'), 262144);
  assert.equal(calls, 1, "one read of the BPF maps per scrape");

  // New snapshot values replace the old ones (absolute counters, not increments).
  setDatapathCollector(() => ({ counters: { forwarded: { packets: 25, bytes: 3000 } }, maps: {} }));
  text = await registry.metrics();
  assert.equal(sample(text, 'bpfproxy_datapath_packets_total{reason="forwarded"}'), 25);
  assert.equal(sample(text, 'bpfproxy_datapath_packets_total{reason="drop_no_backend"}'), undefined);
  assert.equal(sample(text, 'bpfproxy_map_entries{map="bpfproxy_services_v1"}'), undefined);

  // No data plane, or a failing read: no samples, and the scrape still works.
  setDatapathCollector(() => undefined);
  text = await registry.metrics();
  assert.doesNotMatch(text, /^bpfproxy_datapath_packets_total\{/m);
  setDatapathCollector(() => {
    throw new Error("map gone");
  });
  text = await registry.metrics();
  assert.doesNotMatch(text, /^bpfproxy_map_entries\{/m);
  assert.match(text, /# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram/);
  setDatapathCollector(undefined);
});

test("metrics server: /metrics, /healthz, /proxyMode, /configz like kube-proxy's metrics port", async () => {
  const srv = new MetricsServer({
    bindAddress: "127.0.0.1:0",
    proxyMode: "bpf",
    config: () => ({ mode: "bpf", syncPeriodMs: 30000 }),
  });
  const addr = await srv.start();
  assert.ok(addr);
  const base = `http://127.0.0.1:${addr.port}`;
  try {
    const m = await get(`${base}/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.type, /^text\/plain; version=0\.0\.4/);
    assert.match(m.body, /# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram/);

    const h = await get(`${base}/healthz`);
    assert.deepEqual([h.status, h.body], [200, "ok"]);

    const p = await get(`${base}/proxyMode`);
    assert.deepEqual([p.status, p.body, p.type], [200, "bpf", "text/plain; charset=utf-8"]);

    const c = await get(`${base}/configz`);
    assert.equal(c.status, 200);
    assert.deepEqual(JSON.parse(c.body), { "kubeproxy.config.k8s.io": { mode: "bpf", syncPeriodMs: 30000 } });

    assert.equal((await get(`${base}/nope`)).status, 404);
  } finally {
    await srv.stop();
  }
  await assert.rejects(get(`${base}/healthz`));
  assert.equal(
    await new MetricsServer({ bindAddress: "", proxyMode: "bpf" }).start(),
    undefined,
    '"" disables the server',
  );
});
