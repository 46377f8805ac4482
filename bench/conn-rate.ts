// The conn-rate suite: new TCP connections per second, and p50/p99 of connect + request + response + close,
// from a pod to a ClusterIP, while N Services × 10 endpoints are programmed. Six setups on the same lab, one
// after the other, per N:
//   direct     straight to a backend pod's IP (no translation): the limit, and the client's own ceiling
//   bpfproxy   its tc programs on the node's pod veth and eth0, maps written with all N Services; translated
//              packets go through the host stack (the default: netfilter FORWARD and rp_filter apply)
//   bpfproxy-bypass  the same with --bypass-netfilter: translated packets redirected past the stack (FIB lookup)
//   bpfproxy-socklb  the same as bpfproxy plus socket load balancing in pod mode (--socket-lb-pod-namespaces) on a
//              cgroup holding the client: the backend is chosen at connect(), no packet is translated
//   nft        kube-proxy's nftables layout for the N Services (bench/kube-proxy-layouts.ts) in the node
//   iptables   kube-proxy's iptables layout, with the PREROUTING/OUTPUT/POSTROUTING jumps kube-proxy adds
//   direct6, bpfproxy6  direct and bpfproxy over IPv6: every Service dual-stack, the client reaching the target's
//              IPv6 ClusterIP (the lab is dual-stack when either is chosen; vs_direct is against direct6)
// Only Service TARGET (the one in the middle of the list, so iptables' linear KUBE-SERVICES walk costs its
// average) carries traffic; its 10 endpoints are real pods on the other node, each running nginx.
//
// Lab (src/lab, a fresh one per N so that no netfilter state of an earlier setup lingers):
//   node-a 192.0.2.11, pod "client" 10.200.1.10   ── fabric ──   node-b 192.0.2.12, pods be0..be9 10.200.2.10-19
// The client is ApacheBench (Debian apache2-utils): one request per connection (no -k), C concurrent, its -e
// file gives percentiles with microsecond resolution. Every ab run gets a fresh source address on the client
// pod (added as an alias, preferred by the default route's `src`): a 4-tuple that a backend still holds in
// TIME_WAIT from an earlier run would stall that connection for about a second. Within one run the node walks
// the whole port range (1024-65535) before reusing a port, so a run stays under 30 000 connections.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { packagePath } from "../src/paths.js";
import { iptablesFull, nftFull, svcs } from "./kube-proxy-layouts.js";
import { clusterIP, clusterIP6 } from "./objects.js";
import { medianRun, parseAb, type AbResult, type Row } from "./stats.js";

const REQUESTS = Math.min(Number(process.env.BENCH_CONN_REQUESTS ?? 20_000), 30_000);
const CONCURRENCY = Number(process.env.BENCH_CONN_CONCURRENCY ?? 32);
/** ab runs per setup; the row is the run with the median rate (the machine is shared: single runs are noisy). */
const RUNS = Number(process.env.BENCH_CONN_RUNS ?? 3);
const BASELINE_TIMEOUT_MS = Number(process.env.BENCH_BASELINE_TIMEOUT_MS ?? 300_000);
const BACKENDS = 10;
const SETUPS = [
  "direct",
  "bpfproxy",
  "bpfproxy-bypass",
  "bpfproxy-socklb",
  "nft",
  "iptables",
  "direct6",
  "bpfproxy6",
] as const;
type Setup = (typeof SETUPS)[number];

const CLIENT_IP = "10.200.1.10";
const backendIP = (k: number) => `10.200.2.${10 + k}`;
const backendIP6 = (k: number) => `fd00:200:2::${(10 + k).toString(16)}`;
const isV6 = (setup: Setup) => setup.endsWith("6");
const log = (s: string) => console.error(`conn-rate: ${s}`);

function nginxConf(dir: string, k: number): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx-${k}.pid;
error_log ${dir}/nginx-${k}.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path ${dir}/body-${k};
  proxy_temp_path ${dir}/proxy-${k};
  fastcgi_temp_path ${dir}/fcgi-${k};
  uwsgi_temp_path ${dir}/uwsgi-${k};
  scgi_temp_path ${dir}/scgi-${k};
  server {
    listen 8080 backlog=8192 reuseport;
    listen [::]:8080 ipv6only=on backlog=8192 reuseport;
    location / { return 200 "be${k}\\n"; }
  }
}
`;
}

class ConnLab {
  private aliases = 0;
  readonly tmp = mkdtempSync(join(tmpdir(), "bpfproxy-connrate-"));
  /** A private cgroup2 mount and a child of it for the client (socket load balancing); made on first use. */
  private cgMount: string | undefined;
  cgroup: string | undefined;
  private constructor(
    readonly lab: Lab,
    readonly ipv6: boolean,
  ) {}

  static async create(n: number, ipv6: boolean): Promise<ConnLab> {
    const six = (o: Record<string, string>) => (ipv6 ? o : {});
    const lab = await Lab.create({
      prefix: `bpxcr${process.pid}n${n}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.200.1.0/24",
          ...six({ ip6: "2001:db8::a", podCIDR6: "fd00:200:1::/64" }),
          pods: [{ name: "client", ip: CLIENT_IP, ...six({ ip6: "fd00:200:1::10" }) }],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.200.2.0/24",
          ...six({ ip6: "2001:db8::b", podCIDR6: "fd00:200:2::/64" }),
          pods: Array.from({ length: BACKENDS }, (_, k) => ({
            name: `be${k}`,
            ip: backendIP(k),
            ...six({ ip6: backendIP6(k) }),
          })),
        },
      ],
    });
    const cl = new ConnLab(lab, ipv6);
    try {
      await cl.init();
    } catch (e) {
      await cl.destroy();
      throw e;
    }
    return cl;
  }

  private async init(): Promise<void> {
    const { lab } = this;
    await lab.run("client", ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"]);
    await Promise.all(
      Array.from({ length: BACKENDS }, async (_, k) => {
        await lab.run(`be${k}`, ["sysctl", "-q", "-w", "net.core.somaxconn=8192", "net.ipv4.tcp_max_syn_backlog=8192"]);
        const conf = join(this.tmp, `nginx-${k}.conf`);
        writeFileSync(conf, nginxConf(this.tmp, k));
        const child = lab.spawn(`be${k}`, ["nginx", "-c", conf, "-e", join(this.tmp, `nginx-${k}.err`)]);
        child.stdout?.resume();
        child.stderr?.resume();
      }),
    );
    // Bounded wait until every backend answers straight (also checks the lab's routing).
    const urls = Array.from({ length: BACKENDS }, (_, k) => [
      `http://${backendIP(k)}:8080/`,
      ...(this.ipv6 ? [`http://[${backendIP6(k)}]:8080/`] : []),
    ]).flat();
    for (const url of urls) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = await lab.exec("client", ["ab", "-q", "-n", "1", "-s", "2", url], {
          timeoutMs: 5000,
        });
        if (r.code === 0 && /Complete requests:\s+1\b/.test(r.stdout) && /Failed requests:\s+0\b/.test(r.stdout)) break;
        if (Date.now() > deadline)
          throw new Error(`backend ${url} not answering after 10 s: ${r.stdout.slice(-300)} ${r.stderr}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  }

  /** A source address of the family the client pod has not used yet (see the header). */
  private async freshSource(v6: boolean): Promise<string> {
    const k = this.aliases++;
    if (k >= 200) throw new Error("out of client source addresses");
    const ip = v6 ? `fd00:200:1::${(0x50 + k).toString(16)}` : `10.200.1.${50 + k}`;
    const gw = v6 ? this.lab.podGateway6("node-a") : this.lab.podGateway("node-a");
    const [f, len] = v6 ? ["-6", "128"] : ["-4", "32"];
    await this.lab.run("client", ["ip", f, "addr", "add", `${ip}/${len}`, "dev", "eth0", ...(v6 ? ["nodad"] : [])]);
    await this.lab.run("client", ["ip", f, "route", "replace", "default", "via", gw, "dev", "eth0", "src", ip]);
    await this.lab.run("node-a", ["ip", f, "route", "add", `${ip}/${len}`, "dev", this.lab.podInterface("client")]);
    return ip;
  }

  /** The client's cgroup (socket load balancing attaches there): a child of a private cgroup2 mount. */
  clientCgroup(): string {
    if (!this.cgroup) {
      this.cgMount = join(this.tmp, "cgroup2");
      mkdirSync(this.cgMount);
      execFileSync("mount", ["-t", "cgroup2", "none", this.cgMount], { timeout: 10_000 });
      this.cgroup = join(this.cgMount, "client");
      mkdirSync(this.cgroup);
    }
    return this.cgroup;
  }

  /** One ab run from a fresh source address; throws unless every request succeeded with a 2xx. In `cgroup`
   * when given (ab moves itself there before it starts). */
  async ab(url: string, requests: number, cgroup?: string): Promise<AbResult> {
    await this.freshSource(url.includes("["));
    const csv = join(this.tmp, `ab-${this.aliases}.csv`);
    const abCmd = [
      "ab",
      "-n",
      String(requests),
      "-c",
      String(Math.min(CONCURRENCY, requests)),
      "-s",
      "5",
      "-e",
      csv,
      url,
    ];
    const cmd = cgroup ? ["sh", "-c", `echo $$ > ${cgroup}/cgroup.procs && exec ${abCmd.join(" ")}`] : abCmd;
    const r = await this.lab.exec("client", cmd, { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`ab ${url}: ${r.timedOut ? "timeout" : `exit ${r.code}`}: ${r.stderr.trim()}`);
    const res = parseAb(r.stdout, readFileSync(csv, "utf8"));
    if (res.complete !== requests || res.failed > 0 || res.non2xx > 0)
      throw new Error(`ab ${url}: ${res.complete}/${requests} complete, ${res.failed} failed, ${res.non2xx} non-2xx`);
    return res;
  }

  async destroy(): Promise<void> {
    try {
      await this.lab.destroy();
    } finally {
      this.releaseCgroup();
      rmSync(this.tmp, { recursive: true, force: true });
    }
  }

  /** The cgroup goes once its processes (the lab's) are gone; the lazy umount detaches what is left. */
  releaseCgroup(): void {
    if (!this.cgMount) return;
    try {
      if (this.cgroup) rmSync(this.cgroup, { recursive: true, force: true });
    } catch {
      /* busy: the umount below takes it */
    }
    execFileSync("umount", ["-l", this.cgMount], { timeout: 10_000 });
    this.cgMount = undefined;
    this.cgroup = undefined;
  }
}

/** Programs a setup into node-a; milliseconds it took, or null when given up after the baseline timeout. */
async function load(cl: ConnLab, setup: Setup, n: number, target: number, bpffs: string): Promise<number | null> {
  const { lab } = cl;
  const all = svcs(n, BACKENDS);
  all[target]!.endpoints = Array.from({ length: BACKENDS }, (_, k) => backendIP(k));
  const v6Backends = Array.from({ length: BACKENDS }, (_, k) => backendIP6(k));
  const run = async (cmd: string[], input?: string): Promise<number | null> => {
    const t = performance.now();
    const r = await lab.exec("node-a", cmd, { input, timeoutMs: BASELINE_TIMEOUT_MS });
    if (r.timedOut) return null;
    if (r.code !== 0)
      throw new Error(`${setup} load: ${cmd.slice(0, 4).join(" ")}: exit ${r.code}: ${r.stderr.slice(-800)}`);
    return setup.startsWith("bpfproxy")
      ? (JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { ms: number }).ms
      : performance.now() - t;
  };
  switch (setup) {
    case "direct":
    case "direct6":
      return 0;
    case "bpfproxy6":
      return run([
        process.execPath,
        "--import",
        "tsx",
        packagePath("bench/conn-rate-bpf.ts"),
        "program6",
        bpffs,
        String(n),
        String(target),
        v6Backends.join(","),
      ]);
    case "bpfproxy":
    case "bpfproxy-bypass":
    case "bpfproxy-socklb":
      return run([
        process.execPath,
        "--import",
        "tsx",
        packagePath("bench/conn-rate-bpf.ts"),
        setup === "bpfproxy-bypass" ? "program-bypass" : "program",
        bpffs,
        String(n),
        String(target),
        all[target]!.endpoints.join(","),
        ...(setup === "bpfproxy-socklb" ? [cl.clientCgroup()] : []),
      ]);
    case "nft":
      return run(["nft", "-f", "-"], nftFull(all));
    case "iptables":
      return run(["iptables-restore", "--noflush"], iptablesFull(all, { hooks: true }));
  }
}

/** Takes a setup out of node-a again, so the next one measures alone. */
async function unload(cl: ConnLab, setup: Setup, bpffs: string): Promise<void> {
  const bpf = [process.execPath, "--import", "tsx", packagePath("bench/conn-rate-bpf.ts"), "cleanup", bpffs];
  const cmd: Record<Setup, string[] | undefined> = {
    direct: undefined,
    direct6: undefined,
    bpfproxy6: bpf,
    bpfproxy: [process.execPath, "--import", "tsx", packagePath("bench/conn-rate-bpf.ts"), "cleanup", bpffs],
    "bpfproxy-bypass": [process.execPath, "--import", "tsx", packagePath("bench/conn-rate-bpf.ts"), "cleanup", bpffs],
    "bpfproxy-socklb": [process.execPath, "--import", "tsx", packagePath("bench/conn-rate-bpf.ts"), "cleanup", bpffs],
    nft: ["nft", "delete", "table", "ip", "kube-proxy"],
    // kube-proxy's rules stay no longer than their run (the IPv6 setups come after them).
    iptables: ["sh", "-c", "iptables-save | grep -v KUBE- | iptables-restore"],
  };
  if (cmd[setup]) await cl.lab.run("node-a", cmd[setup], { timeoutMs: BASELINE_TIMEOUT_MS });
}

/** BENCH_CONN_SETUPS=direct,bpfproxy runs only those (in the fixed order); default all. */
function chosenSetups(): readonly Setup[] {
  const env = process.env.BENCH_CONN_SETUPS;
  if (!env) return SETUPS;
  const want = env.split(",").map((s) => s.trim());
  const bad = want.filter((s) => !(SETUPS as readonly string[]).includes(s));
  if (bad.length) throw new Error(`BENCH_CONN_SETUPS: unknown setup ${bad.join(", ")} (known: ${SETUPS.join(", ")})`);
  return SETUPS.filter((s) => want.includes(s));
}

export async function connRate(sizes: number[], setups: readonly Setup[] = chosenSetups()): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of sizes) {
    const target = Math.floor(n / 2);
    const vip = clusterIP(target);
    const cl = await ConnLab.create(n, setups.some(isV6));
    let bpffs: PrivateBpffs | undefined;
    // An interrupted run (run.ts turns SIGINT/SIGTERM into exit) still removes the lab and the bpffs mount.
    const onExit = () => {
      cl.lab.destroySync();
      try {
        cl.releaseCgroup();
      } catch {
        /* exiting anyway */
      }
      rmSync(cl.tmp, { recursive: true, force: true });
      bpffs?.release();
    };
    process.once("exit", onExit);
    try {
      bpffs = PrivateBpffs.create("connrate");
      const direct: Partial<Record<4 | 6, number>> = {};
      for (const setup of setups) {
        log(`${n} Services: ${setup}: loading`);
        const ms = await load(cl, setup, n, target, bpffs.path);
        const row: Row = { services: n, setup, load_ms: setup.startsWith("direct") ? "-" : ms };
        if (ms === null) {
          const given = `given up after ${Math.round(BASELINE_TIMEOUT_MS / 1000)} s`;
          Object.assign(row, {
            load_ms: given,
            conn_per_s: given,
            p50_ms: null,
            p99_ms: null,
            vs_direct: null,
            runs_conn_per_s: "-",
          });
        } else {
          const urls: Record<Setup, string> = {
            direct: `http://${backendIP(0)}:8080/`,
            direct6: `http://[${backendIP6(0)}]:8080/`,
            bpfproxy6: `http://[${clusterIP6(target)}]:80/`,
            bpfproxy: `http://${vip}:80/`,
            "bpfproxy-bypass": `http://${vip}:80/`,
            "bpfproxy-socklb": `http://${vip}:80/`,
            nft: `http://${vip}:80/`,
            iptables: `http://${vip}:80/`,
          };
          const url = urls[setup];
          const cg = setup === "bpfproxy-socklb" ? cl.clientCgroup() : undefined;
          await cl.ab(url, 200, cg); // warm-up and a check that this setup translates at all
          if (cg) {
            // tc would translate too: the socket hooks' reverse map proves they chose the backends.
            const m = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.sockRevNat), { readOnly: true });
            const entries = m.entries().count;
            m.close();
            if (entries < 200)
              throw new Error(`bpfproxy-socklb: ${entries} sockets translated at connect(), 200 expected`);
          }
          const load1 = loadavg()[0]!;
          const runs: AbResult[] = [];
          for (let k = 0; k < RUNS; k++) runs.push(await cl.ab(url, REQUESTS, cg));
          const r = medianRun(runs);
          const family = isV6(setup) ? 6 : 4;
          if (setup.startsWith("direct")) direct[family] = r.perSec;
          Object.assign(row, {
            conn_per_s: r.perSec,
            p50_ms: r.p50Ms,
            p99_ms: r.p99Ms,
            vs_direct: direct[family] ? r.perSec / direct[family] : "-",
            runs_conn_per_s: runs.map((x) => Math.round(x.perSec)).join(" "),
            loadavg_1m: load1,
          });
          log(`${n} Services: ${setup}: ${r.perSec.toFixed(0)} conn/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms`);
        }
        row.loadavg_1m ??= loadavg()[0]!;
        rows.push(row);
        if (ms !== null) await unload(cl, setup, bpffs.path);
      }
    } finally {
      process.removeListener("exit", onExit);
      await cl.destroy();
      bpffs?.release();
    }
  }
  return rows;
}

export const CONN_RATE_SETUPS = SETUPS;
export const CONN_RATE_PARAMS = { requests: REQUESTS, concurrency: CONCURRENCY, runs: RUNS, backends: BACKENDS };
