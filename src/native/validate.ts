// Argument checks run before any native call (and by FakeMap), so mistakes surface as precise
// TypeError/RangeError naming the argument instead of an errno from deep inside libbpf.

export function str(what: string, v: unknown): string {
  if (typeof v !== "string") throw new TypeError(`${what} must be a string, got ${typeName(v)}`);
  if (v.length === 0) throw new RangeError(`${what} must not be empty`);
  if (v.includes("\0")) throw new RangeError(`${what} must not contain NUL characters`);
  return v;
}

export function int(what: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number") throw new TypeError(`${what} must be a number, got ${typeName(v)}`);
  if (!Number.isInteger(v)) throw new RangeError(`${what} must be an integer, got ${v}`);
  if (v < min || v > max) throw new RangeError(`${what} must be in [${min}, ${max}], got ${v}`);
  return v;
}

export function optInt(what: string, v: unknown, min: number, max: number, dflt: number): number {
  return v === undefined ? dflt : int(what, v, min, max);
}

/** Flags made only of the given bits. */
export function bits(what: string, v: unknown, allowed: number): number {
  if (v === undefined) return 0;
  const n = int(what, v, 0, 0xffffffff);
  if ((n & ~allowed) !== 0)
    throw new RangeError(
      `${what} has unknown bits 0x${(n & ~allowed).toString(16)} (allowed 0x${allowed.toString(16)})`,
    );
  return n;
}

export function buf(what: string, v: unknown): Buffer {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError(`${what} must be a Buffer, got ${typeName(v)}`);
}

export function sized(what: string, v: unknown, want: number, unit: string): Buffer {
  const b = buf(what, v);
  if (b.length !== want) throw new RangeError(`${what} must be ${want} bytes (${unit}), got ${b.length}`);
  return b;
}

export function obj(what: string, v: unknown): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== "object" || Array.isArray(v))
    throw new TypeError(`${what} must be an object, got ${typeName(v)}`);
  return v as Record<string, unknown>;
}

export function bool(what: string, v: unknown): boolean | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new TypeError(`${what} must be a boolean, got ${typeName(v)}`);
  return v;
}

/** BPF_ANY/BPF_NOEXIST/BPF_EXIST for element updates. */
export function mapFlags(what: string, v: unknown): number {
  if (v === undefined) return 0;
  return int(what, v, 0, 2);
}

/** Checks key/value sizes of a single-element op. */
export function keyOf(op: string, keySize: number, key: unknown): Buffer {
  return sized(`${op}: key`, key, keySize, "the map's keySize");
}

export function valueOf(op: string, valueSizeAll: number, value: unknown): Buffer {
  return sized(`${op}: value`, value, valueSizeAll, "the map's valueSizeAll");
}

/** Checks count and the concatenated keys (and values) of a batch op. */
export function batch(
  op: string,
  keySize: number,
  valueSizeAll: number,
  keys: unknown,
  values: unknown,
  count: unknown,
): { keys: Buffer; values: Buffer | null; count: number } {
  const n = int(`${op}: count`, count, 0, 0xffffffff);
  const k = sized(`${op}: keys`, keys, n * keySize, `count * keySize = ${n} * ${keySize}`);
  const v =
    values === null
      ? null
      : sized(`${op}: values`, values, n * valueSizeAll, `count * valueSizeAll = ${n} * ${valueSizeAll}`);
  return { keys: k, values: v, count: n };
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (Buffer.isBuffer(v)) return "Buffer";
  return typeof v;
}
