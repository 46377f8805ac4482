// The released ABI v1 layouts (16-bit rev-NAT ids), kept only to migrate v1 pins into v2 and to
// program the frozen v1 data plane in tests (bpf/tests/v1/). The C of record is bpf/tests/v1/*.h.
import { writeIPv4 } from "../../k8s/ip.js";
import { ctEntry, svcValue, u32Key, type AffinityKey, type CtEntry, type SvcValue } from "./abi.js";

/** v1 map name → current map name of the maps whose layout changed (conntrack changed again: bpx_ct_v3). */
export const V1_MAPS = {
  bpx_svc_v1: "bpx_svc_v2",
  bpx_backend_v1: "bpx_backend_v2",
  bpx_revnat_v1: "bpx_revnat_v2",
  bpx_svc_meta_v1: "bpx_svc_meta_v2",
  bpx_ct_v1: "bpx_ct_v3",
  bpx_affinity_v1: "bpx_affinity_v2",
} as const;
export type V1MapName = keyof typeof V1_MAPS;

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const r16 = (b: Buffer, o: number) => (LE ? b.readUInt16LE(o) : b.readUInt16BE(o));
const r32 = (b: Buffer, o: number) => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o));
const r64 = (b: Buffer, o: number) => (LE ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
const w16 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
const w32 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
const w64 = (b: Buffer, v: bigint, o: number) => (LE ? b.writeBigUInt64LE(v, o) : b.writeBigUInt64BE(v, o));

/** v1 struct bpx_svc_value: backend_id u32, count u16, rev_nat_id u16, flags u8, pad u8+u16, affinity_timeout u32. */
export const v1 = {
  svcValue: {
    size: 16,
    encode(v: SvcValue): Buffer {
      const b = Buffer.alloc(16);
      w32(b, v.backendId, 0);
      w16(b, v.count, 4);
      w16(b, v.revNatId, 6);
      b.writeUInt8(v.flags, 8);
      w32(b, v.affinityTimeout, 12);
      return b;
    },
    decode(b: Buffer): SvcValue {
      return {
        backendId: r32(b, 0),
        count: r16(b, 4),
        revNatId: r16(b, 6),
        flags: b.readUInt8(8),
        affinityTimeout: r32(b, 12),
      };
    },
  },
  /** v1 struct bpx_ct_entry: last_seen_ns u64, backend_id u32, rev_nat_id u16, flags u8, pad u8 (16 bytes). */
  ctEntry: {
    size: 16,
    encode(v: CtEntry): Buffer {
      const b = Buffer.alloc(16);
      w64(b, v.lastSeenNs, 0);
      w32(b, v.backendId, 8);
      w16(b, v.revNatId, 12);
      b.writeUInt8(v.flags, 14);
      return b;
    },
    decode(b: Buffer): CtEntry {
      return { lastSeenNs: r64(b, 0), backendId: r32(b, 8), revNatId: r16(b, 12), flags: b.readUInt8(14) };
    },
  },
  /** v1 struct bpx_affinity_key: client be32, rev_nat_id u16, pad u16. */
  affinityKey: {
    size: 8,
    decode(b: Buffer): { clientBytes: Buffer; revNatId: number } {
      return { clientBytes: b.subarray(0, 4), revNatId: r16(b, 4) };
    },
    encode(k: AffinityKey): Buffer {
      const b = Buffer.alloc(8);
      writeIPv4(b, 0, k.client);
      w16(b, k.revNatId, 4);
      return b;
    },
  },
  /** v1 rev-NAT and metadata keys: __u16. */
  u16Key: {
    size: 2,
    encode(n: number): Buffer {
      const b = Buffer.alloc(2);
      w16(b, n, 0);
      return b;
    },
    decode(b: Buffer): number {
      return r16(b, 0);
    },
  },
};

/** One v1 entry as its v2 key and value; the same bytes where the layout did not change. */
export function convertV1Entry(map: V1MapName, key: Buffer, value: Buffer): { key: Buffer; value: Buffer } {
  switch (map) {
    case "bpx_svc_v1":
      return { key, value: svcValue.encode(v1.svcValue.decode(value)) };
    case "bpx_backend_v1":
      return { key, value };
    case "bpx_revnat_v1":
    case "bpx_svc_meta_v1":
      return { key: u32Key.encode(v1.u16Key.decode(key)), value };
    case "bpx_ct_v1":
      // The backend's address and port are filled in by the migration (migrate.ts withBackend).
      return { key, value: ctEntry.encode(v1.ctEntry.decode(value)) };
    case "bpx_affinity_v1": {
      const k = v1.affinityKey.decode(key);
      const out = Buffer.alloc(8);
      k.clientBytes.copy(out, 0);
      w32(out, k.revNatId, 4);
      return { key: out, value };
    }
  }
}
