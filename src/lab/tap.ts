// Raw frames with offload metadata for lab tests: a tap device opened with IFF_VNET_HDR, so each frame written
// carries a virtio_net_hdr (VIRTIO_NET_HDR_F_NEEDS_CSUM with csum_start/csum_offset, gso_type/gso_size) and
// enters the kernel as the skb a local stack or GRO would make: CHECKSUM_PARTIAL, and GSO super-packets.
// BPF_PROG_TEST_RUN cannot set ip_summed or GSO; a tap can. The tap is opened without TUNSETOFFLOAD, so the
// kernel finalizes every checksum and segments every GSO packet before handing a frame to the reader, as a
// NIC would on the wire: what the reader gets is what a peer would receive.
// Node has no ioctl: a small python3 agent (Debian's python3, installed by scripts/setup.sh; socket, fcntl,
// struct only) holds the tap for as long as it runs, so the device goes away with it (and with its namespace).
import type { ChildProcess } from "node:child_process";
import type { Lab } from "./netns.js";

const AGENT = String.raw`
import fcntl, json, os, struct, sys, threading, time
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
name = sys.argv[1]
try:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
except OSError as e:
    print(json.dumps({"error": "/dev/net/tun (the kernel's tun module): %s" % e}), flush=True)
    sys.exit(1)
cond = threading.Condition()
got = []
def reader():
    while True:
        b = os.read(fd, 70000)
        flags, gso_type, hdr_len, gso_size, cs, co = struct.unpack("<BBHHHH", b[:10])
        with cond:
            got.append({"flags": flags, "gsoType": gso_type, "gsoSize": gso_size, "frame": b[10:].hex()})
            cond.notify_all()
threading.Thread(target=reader, daemon=True).start()
print(json.dumps({"ready": name}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "send":
        errors = []
        for f in cmd["frames"]:
            hdr = struct.pack("<BBHHHH", f["flags"], f["gsoType"], f["hdrLen"], f["gsoSize"], f["csumStart"], f["csumOffset"])
            try:
                os.write(fd, hdr + bytes.fromhex(f["frame"]))
            except OSError as e:
                errors.append(str(e))
        out = {"errors": errors}
    else:
        deadline = time.monotonic() + cmd["timeoutMs"] / 1000.0
        with cond:
            while len(got) < cmd["min"]:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                cond.wait(left)
            out = {"frames": got[:]}
            del got[:]
    print(json.dumps(out), flush=True)
`;

/** virtio_net_hdr flags and GSO types (include/uapi/linux/virtio_net.h). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;

/** The offload metadata a frame is written with. Zeroes: a frame with full checksums (CHECKSUM_NONE). */
export interface VnetHdr {
  flags: number;
  gsoType: number;
  /** Length of the headers (Ethernet to L4), a hint for the kernel. */
  hdrLen: number;
  gsoSize: number;
  /** Where the checksum starts (the L4 header) and where in it the field lies, from that start. */
  csumStart: number;
  csumOffset: number;
}

export const NO_OFFLOAD: VnetHdr = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

/** A frame the kernel handed to the tap's reader, with its virtio_net_hdr's flags and GSO fields. */
export interface TapFrame {
  flags: number;
  gsoType: number;
  gsoSize: number;
  frame: Buffer;
}

/** One tap device in a lab namespace, held open by a python3 agent the lab tracks (destroy() kills it). */
export class Tap {
  private lines: string[] = [];
  private waiting: Array<(line: string | undefined) => void> = [];
  private stderr = "";
  private exited = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly ns: string,
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    let buf = "";
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const w = this.waiting.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    child.once("exit", () => {
      this.exited = true;
      for (const w of this.waiting.splice(0)) w(undefined);
    });
  }

  /** Creates tap `name` in lab namespace `ns` (down, no address: the caller configures it). */
  static async open(lab: Lab, ns: string, name: string, timeoutMs = 10_000): Promise<Tap> {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new Error(`tap: invalid interface name ${JSON.stringify(name)}`);
    const tap = new Tap(ns, name, lab.spawn(ns, ["python3", "-c", AGENT, name]));
    const line = await tap.nextLine(timeoutMs);
    if (line === undefined || !line.includes('"ready"')) {
      tap.close();
      throw new Error(
        `tap: python3 could not open ${name} in ${ns}: ${line ?? "no answer"}; stderr: ${tap.stderr.trim()}`,
      );
    }
    return tap;
  }

  private nextLine(timeoutMs: number): Promise<string | undefined> {
    const ready = this.lines.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.exited) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = this.waiting.filter((w) => w !== done);
        resolve(undefined);
      }, timeoutMs);
      const done = (line: string | undefined): void => {
        clearTimeout(timer);
        resolve(line);
      };
      this.waiting.push(done);
    });
  }

  private request<T>(cmd: object, timeoutMs: number): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.exited) throw new Error(`tap ${this.name}: agent exited; stderr: ${this.stderr.trim()}`);
      this.child.stdin!.write(JSON.stringify(cmd) + "\n");
      const line = await this.nextLine(timeoutMs);
      if (line === undefined)
        throw new Error(`tap ${this.name}: no answer in ${timeoutMs} ms; stderr: ${this.stderr.trim()}`);
      return JSON.parse(line) as T;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Writes frames into the tap (the kernel receives them on it); throws with the kernel's error for any refused. */
  async send(frames: Array<{ vnet: VnetHdr; frame: Buffer }>): Promise<void> {
    const r = await this.request<{ errors: string[] }>(
      { op: "send", frames: frames.map((f) => ({ ...f.vnet, frame: f.frame.toString("hex") })) },
      10_000,
    );
    if (r.errors.length) throw new Error(`tap ${this.name}: the kernel refused frames: ${r.errors.join("; ")}`);
  }

  /**
   * Every frame the kernel sent out of the tap since the last call, waiting (at most timeoutMs) until there
   * are at least `min`.
   */
  async receive(min: number, timeoutMs: number): Promise<TapFrame[]> {
    const r = await this.request<{ frames: Array<Omit<TapFrame, "frame"> & { frame: string }> }>(
      { op: "recv", min, timeoutMs },
      timeoutMs + 10_000,
    );
    return r.frames.map((f) => ({ ...f, frame: Buffer.from(f.frame, "hex") }));
  }

  /** Ends the agent; the tap goes with it. */
  close(): void {
    if (!this.exited) this.child.kill("SIGKILL");
  }
}
