// Spoofed TCP segments for lab tests (SYN floods, forged sources): written by python3 through a raw IPv4 or
// IPv6 socket (IPPROTO_RAW implies a header of our own in both families, so the source address is ours to
// choose). python3 is a Debian package
// scripts/setup.sh installs; the script is inline so it runs the same from src/ and dist/.
import type { Lab } from "./netns.js";

export interface SpoofedTcpOptions {
  /** Source address(es), of dst's family; with several, packet i uses src[i % src.length]. */
  src: string | string[];
  dst: string;
  /** Source port; omitted: a random port in 1024–65535 per packet. */
  sport?: number;
  dport: number;
  /** TCP flags as letters: S (SYN), A (ACK), R (RST), F (FIN), P (PSH). */
  flags: string;
  /** Packets to send (default 1). */
  count?: number;
  /** Sequence number (default random per packet); ack number (default 0). */
  seq?: number;
  ack?: number;
  /** Packets per second at most (default 20,000: a veth backlog takes 1,000 at once). */
  ratePps?: number;
  /** Bound on the whole run (default 60 s). */
  timeoutMs?: number;
}

const SCRIPT = String.raw`
import json, random, socket, struct, sys, time
o = json.loads(sys.argv[1])
bits = {"F": 1, "S": 2, "R": 4, "P": 8, "A": 16}
flags = 0
for c in o["flags"]:
    flags |= bits[c]
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF
v6 = ":" in o["dst"]
fam = socket.AF_INET6 if v6 else socket.AF_INET
srcs = [socket.inet_pton(fam, a) for a in o["src"]]
dst = socket.inet_pton(fam, o["dst"])
sk = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
gap = 1.0 / o["rate"]
start = time.monotonic()
for i in range(o["count"]):
    src = srcs[i % len(srcs)]
    sport = o["sport"] if o["sport"] is not None else random.randint(1024, 65535)
    seq = o["seq"] if o["seq"] is not None else random.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, o["dport"], seq, o["ack"], 5 << 4, flags, 64240, 0, 0)
    if v6:
        c = csum(src + dst + struct.pack("!IxxxB", len(tcp), 6) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)
    else:
        c = csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    sk.sendto(ip + tcp, (o["dst"], 0))
    ahead = start + (i + 1) * gap - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print(o["count"])
`;

/**
 * Sends `count` TCP segments with forged source addresses from namespace `ns` (a raw socket: the kernel routes
 * them by destination and writes nothing else). Resolves with the number sent; throws if python3 fails.
 */
export async function sendSpoofedTcp(lab: Lab, ns: string, o: SpoofedTcpOptions): Promise<number> {
  if (!/^[FSRPA]+$/.test(o.flags)) throw new Error(`spoof: flags ${JSON.stringify(o.flags)}: letters of FSRPA`);
  const args = {
    src: Array.isArray(o.src) ? o.src : [o.src],
    dst: o.dst,
    sport: o.sport ?? null,
    dport: o.dport,
    flags: o.flags,
    count: o.count ?? 1,
    seq: o.seq ?? null,
    ack: o.ack ?? 0,
    rate: o.ratePps ?? 20_000,
  };
  if (args.src.length === 0) throw new Error("spoof: no source address");
  const r = await lab.exec(ns, ["python3", "-c", SCRIPT, JSON.stringify(args)], { timeoutMs: o.timeoutMs ?? 60_000 });
  if (r.code !== 0) {
    throw new Error(
      `spoof: python3 in ${ns} failed (${r.timedOut ? "timeout" : `exit ${r.code}`}): ${r.stderr.trim()}`,
    );
  }
  return Number(r.stdout.trim());
}
