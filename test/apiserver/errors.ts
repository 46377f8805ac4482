// Kubernetes API error responses (metav1.Status) as the real apiserver shapes them.

// Arbitrary client-sent Kubernetes JSON, stored and validated as the real apiserver's unstructured storage does.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- free-form JSON; see eslint.config.js
export type Obj = Record<string, any>;

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

/** An error that the server turns into a Status response with `code`. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: StatusDetails,
  ) {
    super(message);
    this.name = "ApiError";
  }

  toStatus(): Obj {
    return statusObject(this.code, this.reason, this.message, this.details);
  }
}

export function statusObject(code: number, reason: string, message: string, details?: StatusDetails): Obj {
  const s: Obj = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
  if (details) s.details = details;
  return s;
}

export function successStatus(details?: StatusDetails): Obj {
  const s: Obj = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success" };
  if (details) s.details = details;
  return s;
}

/** "services" or "endpointslices.discovery.k8s.io", as in real error messages. */
export interface GroupResource {
  group: string;
  resource: string;
}
export function qualified(gr: GroupResource): string {
  return gr.group ? `${gr.resource}.${gr.group}` : gr.resource;
}

export function notFound(gr: GroupResource, name: string): ApiError {
  return new ApiError(404, "NotFound", `${qualified(gr)} "${name}" not found`, {
    name,
    group: gr.group || undefined,
    kind: gr.resource,
  });
}

export function alreadyExists(gr: GroupResource, name: string): ApiError {
  return new ApiError(409, "AlreadyExists", `${qualified(gr)} "${name}" already exists`, {
    name,
    group: gr.group || undefined,
    kind: gr.resource,
  });
}

export function conflict(
  gr: GroupResource,
  name: string,
  why = "the object has been modified; please apply your changes to the latest version and try again",
): ApiError {
  return new ApiError(409, "Conflict", `Operation cannot be fulfilled on ${qualified(gr)} "${name}": ${why}`, {
    name,
    group: gr.group || undefined,
    kind: gr.resource,
  });
}

export interface FieldError {
  type:
    | "FieldValueRequired"
    | "FieldValueInvalid"
    | "FieldValueDuplicate"
    | "FieldValueNotSupported"
    | "FieldValueForbidden"
    | "FieldValueTooLong";
  field: string;
  detail: string;
  value?: unknown;
}

const fieldErrorText: Record<FieldError["type"], string> = {
  FieldValueRequired: "Required value",
  FieldValueInvalid: "Invalid value",
  FieldValueDuplicate: "Duplicate value",
  FieldValueNotSupported: "Unsupported value",
  FieldValueForbidden: "Forbidden",
  FieldValueTooLong: "Too long",
};

function fieldErrorMessage(e: FieldError): string {
  const head = fieldErrorText[e.type];
  if (e.type === "FieldValueInvalid" || e.type === "FieldValueNotSupported" || e.type === "FieldValueDuplicate") {
    return `${head}: ${JSON.stringify(e.value ?? null)}${e.detail ? `: ${e.detail}` : ""}`;
  }
  return `${head}${e.detail ? `: ${e.detail}` : ""}`;
}

/** 422 Invalid, e.g. `Service "x" is invalid: spec.ports: Required value`. */
export function invalid(kind: string, group: string, name: string, errs: FieldError[]): ApiError {
  const parts = errs.map((e) => `${e.field}: ${fieldErrorMessage(e)}`);
  const joined = parts.length === 1 ? parts[0] : `[${parts.join(", ")}]`;
  return new ApiError(422, "Invalid", `${kind} "${name}" is invalid: ${joined}`, {
    name,
    group: group || undefined,
    kind,
    causes: errs.map((e) => ({ reason: e.type, message: fieldErrorMessage(e), field: e.field })),
  });
}

export function badRequest(message: string): ApiError {
  return new ApiError(400, "BadRequest", message);
}

export function expired(message: string): ApiError {
  return new ApiError(410, "Expired", message);
}

export function gone(message: string): ApiError {
  return new ApiError(410, "Gone", message);
}

export function methodNotAllowed(message: string): ApiError {
  return new ApiError(405, "MethodNotAllowed", message);
}
