// Label and field selectors, parsed the way the apiserver accepts them in ?labelSelector= / ?fieldSelector=.
import { badRequest, type Obj } from "./errors.js";

type LabelRequirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: "exists" | "!exists" }
  | { key: string; op: ">" | "<"; value: number };

export type Matcher = (obj: Obj) => boolean;
export const matchAll: Matcher = () => true;

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter((t) => t !== "");
}

const KEY = "[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?";
const VALUE = "([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?";

export function parseLabelSelector(sel: string | undefined): Matcher {
  if (!sel || sel.trim() === "") return matchAll;
  const reqs: LabelRequirement[] = [];
  for (const term of splitTopLevel(sel)) {
    let m: RegExpMatchArray | null;
    if ((m = term.match(new RegExp(`^!\\s*(${KEY})$`)))) reqs.push({ key: m[1]!, op: "!exists" });
    else if ((m = term.match(new RegExp(`^(${KEY})\\s+(in|notin)\\s*\\((.*)\\)$`)))) {
      const values = m[4]!.split(",").map((v) => v.trim());
      for (const v of values)
        if (!new RegExp(`^${VALUE}$`).test(v))
          throw badRequest(`unable to parse requirement: invalid label value: "${v}"`);
      reqs.push({ key: m[1]!, op: m[3] as "in" | "notin", values });
    } else if ((m = term.match(new RegExp(`^(${KEY})\\s*(==|=|!=)\\s*(.*)$`)))) {
      const value = m[4]!.trim();
      if (!new RegExp(`^${VALUE}$`).test(value))
        throw badRequest(`unable to parse requirement: invalid label value: "${value}"`);
      reqs.push({ key: m[1]!, op: m[3] === "!=" ? "!=" : "=", value });
    } else if ((m = term.match(new RegExp(`^(${KEY})\\s*([<>])\\s*(-?\\d+)$`)))) {
      reqs.push({ key: m[1]!, op: m[3] as ">" | "<", value: Number(m[4]) });
    } else if ((m = term.match(new RegExp(`^(${KEY})$`)))) reqs.push({ key: m[1]!, op: "exists" });
    else throw badRequest(`unable to parse requirement: found '${term}', expected: !, identifier, or 'end of string'`);
  }
  return (obj) => {
    const labels: Record<string, string> = obj?.metadata?.labels ?? {};
    return reqs.every((r) => {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key);
      const v = labels[r.key];
      switch (r.op) {
        case "=":
          return has && v === r.value;
        case "!=":
          return !has || v !== r.value;
        case "in":
          return has && r.values.includes(v!);
        case "notin":
          return !has || !r.values.includes(v!);
        case "exists":
          return has;
        case "!exists":
          return !has;
        case ">":
          return has && Number(v) > r.value;
        case "<":
          return has && Number(v) < r.value;
      }
    });
  };
}

/** Reads a dotted field path such as "spec.type" or "involvedObject.name". */
export function getPath(obj: Obj, path: string): unknown {
  let cur: unknown = obj;
  for (const p of path.split(".")) {
    if (cur == null || typeof cur !== "object") return undefined;
    cur = (cur as Obj)[p];
  }
  return cur;
}

function splitEscaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === "\\" && i + 1 < s.length) {
      cur += ch + s[i + 1];
      i++;
    } else if (ch === sep) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

function unescape(s: string): string {
  return s.replace(/\\(.)/g, "$1");
}

/**
 * Field selectors: `a=b`, `a==b`, `a!=b`, comma separated. `supported` maps the selectable field names to the
 * path they read (the real apiserver only allows a few per resource and answers 400 for the rest).
 */
export type FieldGetter = string | ((obj: Obj) => string);

export function parseFieldSelector(sel: string | undefined, supported: Record<string, FieldGetter>): Matcher {
  if (!sel || sel.trim() === "") return matchAll;
  const reqs: { path: FieldGetter; neg: boolean; value: string }[] = [];
  for (const raw of splitEscaped(sel, ",")) {
    const term = raw.trim();
    if (term === "") continue;
    const m = term.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${sel}'; can't understand '${term}'`);
    const field = m[1]!.trim();
    const path = supported[field];
    if (path === undefined) throw badRequest(`field label not supported: ${field}`);
    reqs.push({ path, neg: m[2] === "!=", value: unescape(m[3]!) });
  }
  return (obj) =>
    reqs.every((r) => {
      if (typeof r.path === "function") return r.neg ? r.path(obj) !== r.value : r.path(obj) === r.value;
      const v = getPath(obj, r.path);
      const s =
        v === undefined || v === null
          ? ""
          : typeof v === "object"
            ? JSON.stringify(v)
            : (v as string | number | boolean | bigint).toString();
      return r.neg ? s !== r.value : s === r.value;
    });
}
