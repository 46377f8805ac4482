#!/usr/bin/env node
// bpfproxy command line (docs/cli.md). Flag names follow kube-proxy's where the concept is the same.
import { parseArgs } from "node:util";
import { hostname } from "node:os";
import { log, setVerbosity } from "./log.js";
import { UsageError } from "./usage.js";

export const DEFAULT_BPFFS = "/sys/fs/bpf/bpfproxy";
const STANDALONE_MIN_SYNC_PERIOD_MS = 250;

const USAGE = `usage:
  bpfproxy run      [--config FILE] [--kubeconfig FILE | --source dir:PATH] [--hostname-override NAME]
                    [--mode auto|bpf|ipvs] [--devices IF,IF] [--pod-interfaces GLOB,GLOB]
                    [--cluster-cidr CIDR,...] [--masquerade-all] [--bypass-netfilter]
                    [--xdp auto|native|generic|off] [--lb-mode snat|dsr|hybrid]
                    [--nodeport-addresses CIDR|primary,...] [--bpffs DIR] [--cgroup-path DIR]
                    [--socket-lb-pod-namespaces]
                    [--map-sizes services=N,backends=N,frontends=N,conntrack=N,affinity=N,
                                 services6=N,backends6=N,conntrack6=N,affinity6=N]
                    [--healthz-bind-address ADDR:PORT] [--metrics-bind-address ADDR:PORT]
                    [--bind-address IP] [--oom-score-adj N]
                    [--min-sync-period D] [--sync-period D] [--conntrack-gc-interval D]
                    [--snat-port-range MIN-MAX] [--node-port-range MIN-MAX] [--v N]
  bpfproxy status   [--bpffs DIR] [-o table|json] [--stats | --rate]
  bpfproxy monitor  [--bpffs DIR] [--service NS/NAME] [--drops] [-o table|json]
  bpfproxy render   --source dir:PATH --hostname-override NAME [-o table|json]
  bpfproxy explain  <dst-ip>:<port>[/tcp|udp] [--from <src-ip>[:<port>]] [--on-node [--device IF] | --from-pod IF]
                    [--bpffs DIR] [-o table|json]
  bpfproxy cleanup  [--bpffs DIR]
  bpfproxy reserve-ports [--config FILE] [--snat-port-range MIN-MAX] [--node-port-range MIN-MAX]
  bpfproxy demo`;

const list = (s: string | undefined): string[] =>
  (s ?? "")
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

function sourcePath(spec: string | undefined): string {
  if (!spec) throw new UsageError("--source dir:PATH is required");
  if (!spec.startsWith("dir:")) throw new UsageError(`--source must be dir:PATH, got ${JSON.stringify(spec)}`);
  return spec.slice(4);
}

function outputFormat(o: string | undefined): "table" | "json" {
  if (o === undefined || o === "table" || o === "json") return o ?? "table";
  throw new UsageError(`-o must be table or json, got ${JSON.stringify(o)}`);
}

const defaultNodeName = () => hostname().toLowerCase();

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // explain: its own flags and a positional target (src/explain/index.ts).
  if (command === "explain") {
    const { runExplain } = await import("./explain/index.js");
    return await runExplain(rest, DEFAULT_BPFFS);
  }
  const { values } = parseArgs({
    args: rest,
    allowPositionals: false,
    strict: true,
    options: {
      config: { type: "string" },
      kubeconfig: { type: "string" },
      source: { type: "string" },
      "hostname-override": { type: "string" },
      mode: { type: "string" },
      devices: { type: "string" },
      "pod-interfaces": { type: "string" },
      "cluster-cidr": { type: "string" },
      "masquerade-all": { type: "boolean" },
      "bypass-netfilter": { type: "boolean" },
      xdp: { type: "string" },
      "lb-mode": { type: "string" },
      "nodeport-addresses": { type: "string" },
      bpffs: { type: "string" },
      "cgroup-path": { type: "string" },
      "socket-lb-pod-namespaces": { type: "boolean" },
      "map-sizes": { type: "string" },
      "healthz-bind-address": { type: "string" },
      "metrics-bind-address": { type: "string" },
      "bind-address": { type: "string" },
      "oom-score-adj": { type: "string" },
      "min-sync-period": { type: "string" },
      "sync-period": { type: "string" },
      "conntrack-gc-interval": { type: "string" },
      "snat-port-range": { type: "string" },
      "node-port-range": { type: "string" },
      v: { type: "string" },
      output: { type: "string", short: "o" },
      // status --stats/--rate, monitor (issue 19)
      stats: { type: "boolean" },
      rate: { type: "boolean" },
      service: { type: "string" },
      drops: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.v !== undefined) setVerbosity(Number(values.v));
  if (values.help || !command) {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const bpffs = values.bpffs ?? DEFAULT_BPFFS;

  switch (command) {
    case "render": {
      const { renderFromFolder, renderJSON } = await import("./render.js");
      const { formatFrontendsTable } = await import("./format.js");
      const fmt = outputFormat(values.output);
      const state = renderFromFolder(sourcePath(values.source), values["hostname-override"] ?? defaultNodeName(), {
        clusterCIDRs: list(values["cluster-cidr"]),
        nodePortAddresses: list(values["nodeport-addresses"]),
      });
      process.stdout.write(fmt === "json" ? renderJSON(state) + "\n" : formatFrontendsTable(state.frontends));
      return 0;
    }
    case "status": {
      const { readStatus } = await import("./dataplane/bpf/status.js");
      const { formatStatus } = await import("./format.js");
      const { formatRates, formatStats, trafficRates } = await import("./stats-format.js");
      const fmt = outputFormat(values.output);
      const { readModeChoice } = await import("./dataplane/probe.js");
      const choice = readModeChoice();
      const { readIpvsStatus, readState } = await import("./dataplane/ipvs/index.js");
      const read = async () =>
        choice?.mode === "ipvs" || (!choice && readState())
          ? await readIpvsStatus()
          : { ...readStatus(bpffs), ...(choice ? { reason: choice.reason } : {}) };
      if (values.stats && values.rate) throw new UsageError("--stats and --rate are alternatives: pass one");
      const st = await read();
      if (values.rate) {
        // Like ipvsadm --rate: per second, here over one second of two readings.
        await new Promise((r) => setTimeout(r, 1000));
        const rates = trafficRates(st, await read(), 1);
        process.stdout.write(fmt === "json" ? JSON.stringify({ ...st, rates }, null, 2) + "\n" : formatRates(rates));
        return 0;
      }
      process.stdout.write(
        fmt === "json" ? JSON.stringify(st, null, 2) + "\n" : values.stats ? formatStats(st) : formatStatus(st),
      );
      return 0;
    }
    case "monitor": {
      const { runMonitor } = await import("./monitor.js");
      const fmt = outputFormat(values.output);
      if (values.service !== undefined && !/^[^/\s]+\/[^/\s]+$/.test(values.service))
        throw new UsageError(`--service must be NAMESPACE/NAME, got ${JSON.stringify(values.service)}`);
      const stop = new Promise<void>((resolve) => {
        process.once("SIGINT", () => resolve());
        process.once("SIGTERM", () => resolve());
      });
      const res = await runMonitor({
        bpffs,
        service: values.service,
        dropsOnly: values.drops === true,
        json: fmt === "json",
        stop,
        onReady: () => process.stderr.write(`monitor: listening (${bpffs})\n`),
      });
      process.stderr.write(
        `monitor: ${res.shown} events shown; ${res.suppressed} held back by the rate limit, ${res.lost} lost (ring buffer full)\n`,
      );
      return 0;
    }
    case "cleanup": {
      const { cleanup } = await import("./dataplane/bpf/status.js");
      const res = cleanup(bpffs);
      for (const a of res.detached) console.log(`detached ${a.program} from ${a.interface} (${a.hook})`);
      for (const p of res.unpinned) console.log(`removed pin ${p}`);
      const { cleanupIpvs } = await import("./dataplane/ipvs/index.js");
      const { forgetModeChoice } = await import("./dataplane/probe.js");
      const ipvs = await cleanupIpvs();
      forgetModeChoice();
      if (ipvs.services)
        console.log(`removed ${ipvs.services} IPVS virtual services, kube-ipvs0 and the nftables table`);
      return 0;
    }
    case "run": {
      const { runDaemon } = await import("./daemon/run.js");
      const { mergeConfig, parseDuration, parseMapSizes, readConfigFile } = await import("./config.js");
      const mapSizesFlag = (s: string | undefined) => {
        try {
          return s === undefined ? undefined : (parseMapSizes(s) as import("./dataplane/bpf/abi.js").MapSizes);
        } catch (err) {
          throw new UsageError(`--map-sizes: ${(err as Error).message}`);
        }
      };
      if (values.kubeconfig !== undefined && values.source !== undefined) {
        throw new UsageError("--kubeconfig and --source are alternatives: pass one");
      }
      if (values.source !== undefined) sourcePath(values.source);
      const dur = (flag: string, s: string | undefined) => {
        try {
          return s === undefined ? undefined : parseDuration(s);
        } catch (err) {
          throw new UsageError(`--${flag}: ${(err as Error).message}`);
        }
      };
      const lbModeFlag = (s: string | undefined): "snat" | "dsr" | "hybrid" | undefined => {
        if (s === undefined) return undefined;
        if (s !== "snat" && s !== "dsr" && s !== "hybrid")
          throw new UsageError(`--lb-mode: expected snat, dsr or hybrid, got ${JSON.stringify(s)}`);
        return s;
      };
      const intFlag = (flag: string, s: string) => {
        if (!/^[-+]?\d+$/.test(s.trim()))
          throw new UsageError(`--${flag}: expected a whole number, got ${JSON.stringify(s)}`);
        return Number(s);
      };
      // Flags override the file; unset flags leave the file's (or the default) value.
      const flags = {
        source: values.source,
        kubeconfig: values.kubeconfig,
        hostnameOverride: values["hostname-override"],
        mode: values.mode as "auto" | "bpf" | "ipvs" | undefined,
        devices: values.devices === undefined ? undefined : list(values.devices),
        podInterfaces: values["pod-interfaces"] === undefined ? undefined : list(values["pod-interfaces"]),
        clusterCIDRs: values["cluster-cidr"] === undefined ? undefined : list(values["cluster-cidr"]),
        masqueradeAll: values["masquerade-all"],
        bypassNetfilter: values["bypass-netfilter"],
        xdp: values.xdp as "auto" | "native" | "generic" | "off" | undefined,
        lbMode: lbModeFlag(values["lb-mode"]),
        nodePortAddresses: values["nodeport-addresses"] === undefined ? undefined : list(values["nodeport-addresses"]),
        bpffs: values.bpffs,
        cgroupPath: values["cgroup-path"],
        socketLBPodNamespaces: values["socket-lb-pod-namespaces"],
        mapSizes: mapSizesFlag(values["map-sizes"]),
        healthzBindAddress: values["healthz-bind-address"],
        metricsBindAddress: values["metrics-bind-address"],
        bindAddress: values["bind-address"],
        oomScoreAdj:
          values["oom-score-adj"] === undefined ? undefined : intFlag("oom-score-adj", values["oom-score-adj"]),
        minSyncPeriodMs: dur("min-sync-period", values["min-sync-period"]),
        syncPeriodMs: dur("sync-period", values["sync-period"]),
        conntrackGCIntervalMs: dur("conntrack-gc-interval", values["conntrack-gc-interval"]),
        snatPortRange: values["snat-port-range"],
        nodePortRange: values["node-port-range"],
        verbosity: values.v === undefined ? undefined : Number(values.v),
      };
      const file = values.config === undefined ? undefined : (await readConfigFile(values.config)).config;
      // Standalone, a saved manifest must take effect within a second; kube-proxy's 1 s default
      // plus the folder's debounce would not promise that.
      if (
        (flags.source ?? file?.source) &&
        flags.minSyncPeriodMs === undefined &&
        file?.minSyncPeriodMs === undefined
      ) {
        flags.minSyncPeriodMs = STANDALONE_MIN_SYNC_PERIOD_MS;
      }
      const cfg = mergeConfig(file, flags);
      setVerbosity(cfg.verbosity);
      await runDaemon(cfg);
      return 0;
    }
    case "reserve-ports": {
      // The DaemonSet's privileged init container: the daemon's container cannot write /proc/sys.
      const { mergeConfig, readConfigFile } = await import("./config.js");
      const { parseNodePortRange, parseSnatPortRange } = await import("./config/validate.js");
      const { reserveOnNode } = await import("./dataplane/bpf/reserved-ports.js");
      const file = values.config === undefined ? undefined : (await readConfigFile(values.config)).config;
      const cfg = mergeConfig(file, {
        snatPortRange: values["snat-port-range"],
        nodePortRange: values["node-port-range"],
      });
      reserveOnNode(parseSnatPortRange(cfg.snatPortRange));
      console.log(`net.ipv4.ip_local_reserved_ports = ${reserveOnNode(parseNodePortRange(cfg.nodePortRange))}`);
      return 0;
    }
    case "demo": {
      const { runDemo } = await import("./demo.js");
      return await runDemo();
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    if (
      err instanceof UsageError ||
      err.name === "ConfigError" ||
      String((err as { code?: string }).code).startsWith("ERR_PARSE_ARGS")
    ) {
      process.stderr.write(`bpfproxy: ${err.message}\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      log.error(err.message);
      process.exitCode = 1;
    }
    // A daemon that failed to start may already have servers and watches open: exit rather than linger
    // unready until liveness restarts it (as kube-proxy exits on a fatal start error). The data plane
    // stays as it was, as on any stop.
    process.exit();
  },
);
