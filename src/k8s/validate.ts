// Validation entry points. Sources call these on every object they receive; nothing here throws for a
// bad object. Invalid objects are reported (log line with namespace/name and reason, plus the
// bpfproxy_invalid_objects_total{kind,reason} counter) and skipped by the caller.

import type { z } from "zod";
import { log } from "../log.js";
import { invalidObjectsTotal } from "../metrics.js";
import {
  endpointSliceSchema,
  endpointsSchema,
  nodeSchema,
  serviceSchema,
  type EndpointSlice,
  type Endpoints,
  type InvalidCode,
  type Node,
  type Service,
} from "./schemas.js";
import { objectKeyOf } from "./packed.js";

export type KnownKind = "Service" | "EndpointSlice" | "Endpoints" | "Node";

export type ValidObject =
  | { ok: true; kind: "Service"; key: string; object: Service }
  | { ok: true; kind: "EndpointSlice"; key: string; object: EndpointSlice }
  | { ok: true; kind: "Endpoints"; key: string; object: Endpoints }
  | { ok: true; kind: "Node"; key: string; object: Node };

export interface InvalidObject {
  ok: false;
  /** The object's kind as written ("" when absent). */
  kind: string;
  /** "namespace/name", "name" for cluster-scoped objects, or "<unknown>". */
  key: string;
  /** Human-readable, for the log. */
  reason: string;
  /** Bounded, for the metric label. */
  code: InvalidCode;
  /**
   * True when the object is simply not something bpfproxy handles (unknown kind): callers skip it quietly
   * (log.v(2)) and do not count it as invalid.
   */
  ignored: boolean;
}

export type ValidationResult = ValidObject | InvalidObject;

const API_VERSIONS: Record<KnownKind, string> = {
  Service: "v1",
  EndpointSlice: "discovery.k8s.io/v1",
  Endpoints: "v1",
  Node: "v1",
};

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** "namespace/name" (or "name") from whatever metadata the raw object has; for log lines. */
export function objectKey(obj: unknown): string {
  if (!isRecord(obj) || !isRecord(obj.metadata)) return "<unknown>";
  const name = typeof obj.metadata.name === "string" && obj.metadata.name !== "" ? obj.metadata.name : "<unnamed>";
  const ns = obj.metadata.namespace;
  return typeof ns === "string" && ns !== "" ? `${ns}/${name}` : name;
}

function issuePath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += (out === "" ? "" : ".") + String(p);
  }
  return out;
}

/** Maps a zod issue onto our bounded reason codes (custom checks carry theirs in params.reason). */
function issueCode(issue: z.core.$ZodIssue): InvalidCode {
  const params = (issue as { params?: { reason?: InvalidCode } }).params;
  if (params?.reason) return params.reason;
  if ("input" in issue && (issue.input === undefined || issue.input === null)) return "missing_field";
  const last = issue.path[issue.path.length - 1];
  const field = typeof last === "string" ? last : "";
  if (issue.code === "invalid_value" && field === "protocol") return "bad_protocol";
  if (
    /port$/i.test(field) &&
    (issue.code === "too_small" ||
      issue.code === "too_big" ||
      (issue.code === "invalid_type" && issue.expected === "int"))
  ) {
    return "port_out_of_range";
  }
  if (issue.code === "too_small" && issue.origin === "array") return "missing_field";
  if (field === "name" || field === "namespace") return "bad_name";
  return "bad_value";
}

function describe(error: z.ZodError): { reason: string; code: InvalidCode } {
  const issues = error.issues;
  const first = issues[0];
  if (!first) return { reason: "invalid", code: "bad_value" };
  const parts = issues.slice(0, 3).map((i) => {
    const p = issuePath(i.path);
    return p === "" ? i.message : `${p}: ${i.message}`;
  });
  if (issues.length > 3) parts.push(`(+${issues.length - 3} more)`);
  return { reason: parts.join("; "), code: issueCode(first) };
}

function parseWith<K extends KnownKind>(kind: K, schema: z.ZodType, obj: unknown): ValidationResult {
  const key = objectKey(obj);
  if (!isRecord(obj)) return { ok: false, kind, key, reason: "not an object", code: "not_an_object", ignored: false };
  const r = schema.safeParse(obj, { reportInput: true });
  if (!r.success) {
    const { reason, code } = describe(r.error);
    return { ok: false, kind, key, reason, code, ignored: false };
  }
  const object = r.data as { metadata: { name: string; namespace?: string } };
  const k = objectKeyOf(object.metadata.namespace, object.metadata.name);
  return { ok: true, kind, key: k, object } as ValidObject;
}

export function validateService(obj: unknown): ValidationResult {
  return parseWith("Service", serviceSchema, obj);
}

export function validateEndpointSlice(obj: unknown): ValidationResult {
  return parseWith("EndpointSlice", endpointSliceSchema, obj);
}

export function validateEndpoints(obj: unknown): ValidationResult {
  return parseWith("Endpoints", endpointsSchema, obj);
}

export function validateNode(obj: unknown): ValidationResult {
  return parseWith("Node", nodeSchema, obj);
}

const VALIDATORS: Record<KnownKind, (obj: unknown) => ValidationResult> = {
  Service: validateService,
  EndpointSlice: validateEndpointSlice,
  Endpoints: validateEndpoints,
  Node: validateNode,
};

/**
 * Validates one object. The kind comes from `obj.kind`, or from `kindHint` when the object has none
 * (items of a list response carry no kind). An apiVersion, when present, must be the one we understand
 * (e.g. discovery.k8s.io/v1beta1 slices are rejected as unsupported_version). Unknown kinds come back with
 * `ignored: true`. Never throws.
 */
export function validateObject(obj: unknown, kindHint?: KnownKind): ValidationResult {
  if (!isRecord(obj)) {
    return {
      ok: false,
      kind: kindHint ?? "",
      key: "<unknown>",
      reason: "not an object",
      code: "not_an_object",
      ignored: false,
    };
  }
  const kind = typeof obj.kind === "string" && obj.kind !== "" ? obj.kind : (kindHint ?? "");
  const key = objectKey(obj);
  if (!(kind in VALIDATORS)) {
    return {
      ok: false,
      kind,
      key,
      reason: kind === "" ? "object has no kind" : `kind ${kind} is not used by bpfproxy`,
      code: "bad_value",
      ignored: true,
    };
  }
  const known = kind as KnownKind;
  if (typeof obj.apiVersion === "string" && obj.apiVersion !== "" && obj.apiVersion !== API_VERSIONS[known]) {
    return {
      ok: false,
      kind,
      key,
      reason: `apiVersion ${obj.apiVersion} is not supported for ${kind} (want ${API_VERSIONS[known]})`,
      code: "unsupported_version",
      ignored: false,
    };
  }
  try {
    return VALIDATORS[known](obj);
  } catch (err) {
    // Defensive: a schema bug must not take the source down.
    return { ok: false, kind, key, reason: `validation failed: ${String(err)}`, code: "bad_value", ignored: false };
  }
}

/** Logs the skipped object with its namespace/name and reason, and counts it. */
export function reportInvalid(kind: string, key: string, reason: string, code: InvalidCode = "bad_value"): void {
  log.warn("skipping invalid object", { kind: kind || "<none>", object: key, reason });
  invalidObjectsTotal.inc({ kind: kind || "<none>", reason: code });
}

/** reportInvalid for a failed ValidationResult; quiet (v=2) for ignored kinds. */
export function reportResult(r: InvalidObject): void {
  if (r.ignored) {
    log.v(2, "ignoring object", { kind: r.kind || "<none>", object: r.key, reason: r.reason });
    return;
  }
  reportInvalid(r.kind, r.key, r.reason, r.code);
}
