// PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch (the subset kubectl produces), JSON patch (RFC 6902).
import { badRequest, ApiError, type Obj } from "./errors.js";

export const clone = <T>(v: T): T => (v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T));

const isObject = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: Obj = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/**
 * How a list field merges under strategic merge patch, keyed by the dotted field path from the object root
 * (list indexes dropped). Lists not named here are replaced whole (atomic), as for most k8s list fields.
 */
export type ListStrategy = { mergeKey: string } | { primitive: true };
export const defaultListStrategies: Record<string, ListStrategy> = {
  "metadata.ownerReferences": { mergeKey: "uid" },
  "metadata.finalizers": { primitive: true },
  "status.conditions": { mergeKey: "type" },
  "status.addresses": { mergeKey: "type" },
  "spec.podCIDRs": { primitive: true },
  "spec.template.spec.containers": { mergeKey: "name" },
  "spec.containers": { mergeKey: "name" },
  "spec.volumes": { mergeKey: "name" },
};

export function strategicMergePatch(
  target: unknown,
  patch: unknown,
  strategies: Record<string, ListStrategy>,
  path = "",
): unknown {
  if (!isObject(patch)) return clone(patch);
  const directive = patch["$patch"];
  if (directive === "replace") {
    const p = clone(patch);
    delete p["$patch"];
    return p;
  }
  if (directive === "delete") return undefined;
  const out: Obj = isObject(target) ? clone(target) : {};
  const orders: [string, unknown[]][] = [];
  for (const [k, v] of Object.entries(patch)) {
    if (k === "$patch" || k === "$retainKeys") continue;
    if (k.startsWith("$setElementOrder/")) {
      if (Array.isArray(v)) orders.push([k.slice("$setElementOrder/".length), v]);
      continue;
    }
    if (k.startsWith("$deleteFromPrimitiveList/")) {
      const f = k.slice("$deleteFromPrimitiveList/".length);
      if (Array.isArray(out[f]) && Array.isArray(v)) out[f] = out[f].filter((x: unknown) => !v.includes(x));
      continue;
    }
    const sub = path ? `${path}.${k}` : k;
    if (v === null) delete out[k];
    else if (Array.isArray(v)) out[k] = mergeList(out[k], v, strategies[sub], strategies, sub);
    else if (isObject(v)) {
      const r = strategicMergePatch(out[k], v, strategies, sub);
      if (r === undefined) delete out[k];
      else out[k] = r;
    } else out[k] = v;
  }
  for (const [field, order] of orders) {
    const list = out[field];
    if (!Array.isArray(list)) continue;
    const strat = strategies[path ? `${path}.${field}` : field];
    const keyOf = (x: unknown): unknown => (strat && "mergeKey" in strat && isObject(x) ? x[strat.mergeKey] : x);
    const orderKeys = order.map(keyOf);
    const rank = (x: unknown) => {
      const i = orderKeys.findIndex((k) => JSON.stringify(k) === JSON.stringify(keyOf(x)));
      return i < 0 ? Number.MAX_SAFE_INTEGER : i;
    };
    out[field] = [...list].sort((a, b) => rank(a) - rank(b));
  }
  const retain = patch["$retainKeys"];
  if (Array.isArray(retain)) for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  return out;
}

function stripDirectives(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const o: Obj = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith("$")) o[k] = stripDirectives(x);
  return o;
}

function mergeList(
  target: unknown,
  patch: unknown[],
  strat: ListStrategy | undefined,
  strategies: Record<string, ListStrategy>,
  path: string,
): unknown[] {
  const replaceAll = patch.some((x) => isObject(x) && x["$patch"] === "replace");
  if (!strat || replaceAll || !Array.isArray(target)) {
    return patch.filter((x) => !(isObject(x) && x["$patch"] === "replace")).map(stripDirectives);
  }
  if ("primitive" in strat) {
    const out = clone(target);
    for (const x of patch) if (!out.some((y) => JSON.stringify(y) === JSON.stringify(x))) out.push(x);
    return out;
  }
  const key = strat.mergeKey;
  const out: unknown[] = clone(target);
  for (const item of patch) {
    if (!isObject(item)) {
      out.push(item);
      continue;
    }
    const idx = out.findIndex((x) => isObject(x) && JSON.stringify(x[key]) === JSON.stringify(item[key]));
    if (item["$patch"] === "delete") {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMergePatch(out[idx], item, strategies, path);
    else out.push(stripDirectives(item));
  }
  return out;
}

// ---- RFC 6902 JSON patch ----

function parsePointer(p: string): string[] {
  if (p === "") return [];
  if (!p.startsWith("/"))
    throw badRequest(
      `the server rejected our request due to an error in our request: invalid JSON pointer ${JSON.stringify(p)}`,
    );
  return p
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

/** The value one step into a JSON object or array (arrays by index). */
const child = (cur: object, t: string): unknown => (Array.isArray(cur) ? (cur[Number(t)] as unknown) : (cur as Obj)[t]);

function resolveParent(doc: unknown, tokens: string[]): { parent: unknown; key: string } {
  let cur = doc;
  for (const t of tokens.slice(0, -1)) {
    if (cur === null || typeof cur !== "object" || !(t in cur))
      throw unprocessable(`doc is missing path: "/${tokens.join("/")}"`);
    cur = child(cur, t);
  }
  return { parent: cur, key: tokens[tokens.length - 1]! };
}

const unprocessable = (m: string) =>
  new ApiError(422, "Invalid", `the server rejected our request due to an error in our request: ${m}`);

export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest("json patch: body must be a JSON array of operations");
  let root = clone(doc);
  const get = (path: string) => {
    let cur = root;
    for (const t of parsePointer(path)) {
      if (cur === null || typeof cur !== "object" || !(t in cur)) throw unprocessable(`doc is missing path: "${path}"`);
      cur = child(cur, t);
    }
    return cur;
  };
  const remove = (path: string) => {
    const tokens = parsePointer(path);
    const { parent, key } = resolveParent(root, tokens);
    if (Array.isArray(parent)) {
      const i = Number(key);
      if (!(i >= 0 && i < parent.length))
        throw unprocessable(`unable to remove nonexistent key: ${key}: missing value`);
      return parent.splice(i, 1)[0];
    }
    if (parent === null || typeof parent !== "object" || !(key in parent))
      throw unprocessable(`unable to remove nonexistent key: ${key}: missing value`);
    const v = (parent as Obj)[key] as unknown;
    delete (parent as Obj)[key];
    return v;
  };
  const add = (path: string, value: unknown, replace: boolean) => {
    const tokens = parsePointer(path);
    if (tokens.length === 0) {
      root = clone(value);
      return;
    }
    const { parent, key } = resolveParent(root, tokens);
    if (Array.isArray(parent)) {
      const i = key === "-" ? parent.length : Number(key);
      if (!(i >= 0 && i <= parent.length)) throw unprocessable(`index out of range: ${key}`);
      if (replace) {
        if (i >= parent.length)
          throw unprocessable(`replace operation does not apply: doc is missing key: ${path}: missing value`);
        parent[i] = clone(value);
      } else parent.splice(i, 0, clone(value));
    } else if (parent !== null && typeof parent === "object") {
      if (replace && !(key in parent))
        throw unprocessable(`replace operation does not apply: doc is missing key: ${path}: missing value`);
      (parent as Obj)[key] = clone(value);
    } else throw unprocessable(`doc is missing path: "${path}"`);
  };
  for (const op of ops as Obj[]) {
    switch (op.op) {
      case "add":
        add(op.path, op.value, false);
        break;
      case "replace":
        add(op.path, op.value, true);
        break;
      case "remove":
        remove(op.path);
        break;
      case "move": {
        const v = remove(op.from);
        add(op.path, v, false);
        break;
      }
      case "copy":
        add(op.path, get(op.from), false);
        break;
      case "test":
        if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value))
          throw unprocessable(`testing value ${op.path} failed: test failed`);
        break;
      default:
        throw badRequest(`Unexpected kind: ${String(op.op)}`);
    }
  }
  return root;
}
