// Errors in what the user typed.

/** A mistake in flags or arguments: printed with the usage text, exit code 2. */
export class UsageError extends Error {}
