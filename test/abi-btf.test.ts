// The TS codecs must mirror the C structs byte for byte. This reads the BTF of the compiled
// object (the same .o the daemon loads) with bpftool and fails on any size or offset drift.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { MAP_CODECS, MAP_NAMES, structCodecs, type Codec } from "../src/dataplane/bpf/abi.js";

const OBJECT = process.env.BPX_BTF_OBJECT ?? "bpf/bpfproxy.o";

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number }[];
}

function loadBtf(path: string): Map<number, BtfType> {
  assert.ok(existsSync(path), `${path} is missing: run npm run build`);
  const out = execFileSync("bpftool", ["-j", "btf", "dump", "file", path], { encoding: "utf8", timeout: 20_000 });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.map((t) => [t.id, t]));
}

/** Resolves typedefs/qualifiers and returns the byte size of a BTF type. */
function sizeOf(btf: Map<number, BtfType>, id: number): number {
  const t = btf.get(id);
  assert.ok(t, `BTF type ${id} missing`);
  switch (t.kind) {
    case "TYPEDEF":
    case "CONST":
    case "VOLATILE":
    case "RESTRICT":
    case "TYPE_TAG":
      return sizeOf(btf, t.type_id!);
    case "ARRAY":
      return sizeOf(btf, t.type_id!) * t.nr_elems!;
    case "PTR":
      return 8;
    default:
      assert.ok(t.size !== undefined, `BTF type ${id} (${t.kind}) has no size`);
      return t.size;
  }
}

function resolve(btf: Map<number, BtfType>, id: number): BtfType {
  let t = btf.get(id)!;
  while (["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"].includes(t.kind)) t = btf.get(t.type_id!)!;
  return t;
}

const btf = loadBtf(OBJECT);
const structs = new Map([...btf.values()].filter((t) => t.kind === "STRUCT" && t.name).map((t) => [t.name!, t]));

for (const codec of structCodecs as Codec<unknown>[]) {
  test(`codec ${codec.cName} matches the C struct in ${OBJECT}`, () => {
    const s = structs.get(codec.cName);
    assert.ok(s, `struct ${codec.cName} not in the object's BTF`);
    assert.equal(codec.size, s.size, `sizeof(struct ${codec.cName})`);
    const cMembers = s.members!.map((m) => ({ c: m.name, offset: m.bits_offset / 8, size: sizeOf(btf, m.type_id) }));
    assert.deepEqual(
      codec.layout.map((m) => ({ ...m })),
      cMembers,
      `members of struct ${codec.cName} (name, offset, size) differ between C and TS`,
    );
  });
}

test("every map's key and value sizes match their codecs", () => {
  const vars = new Map([...btf.values()].filter((t) => t.kind === "VAR").map((t) => [t.name!, t]));
  for (const name of Object.values(MAP_NAMES)) {
    const v = vars.get(name);
    assert.ok(v, `map ${name} not defined in ${OBJECT}`);
    const def = resolve(btf, v.type_id!);
    // The ring buffer has no key or value type: its records are struct bpx_event (checked above).
    if (name === MAP_NAMES.events) continue;
    const member = (n: string) => {
      const m = def.members!.find((x) => x.name === n);
      // A map without BTF key and value types (a PROG_ARRAY) gives their sizes: __uint(key_size, N) is a
      // pointer to an array of N elements.
      const sized = def.members!.find((x) => x.name === `${n}_size`);
      if (!m && sized) {
        const arr = resolve(btf, resolve(btf, sized.type_id).type_id!);
        assert.equal(arr.kind, "ARRAY");
        return arr.nr_elems!;
      }
      assert.ok(m, `map ${name} has no ${n} type`);
      const ptr = resolve(btf, m.type_id);
      assert.equal(ptr.kind, "PTR");
      return sizeOf(btf, ptr.type_id!);
    };
    const codecs = MAP_CODECS[name];
    assert.equal(member("key"), codecs.key.size, `${name} key size`);
    assert.equal(member("value"), codecs.value.size, `${name} value size`);
  }
});

test("the check itself notices drift", () => {
  // Guard against a vacuous comparison: a shifted member must not compare equal.
  const s = structs.get("bpx_svc_key")!;
  const shifted = s.members!.map((m, i) => ({
    c: m.name,
    offset: m.bits_offset / 8 + (i === 2 ? 1 : 0),
    size: sizeOf(btf, m.type_id),
  }));
  const codec = structCodecs.find((c) => c.cName === "bpx_svc_key")!;
  assert.notDeepEqual(
    codec.layout.map((m) => ({ ...m })),
    shifted,
  );
});
