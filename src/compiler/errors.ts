// Compiler errors with stable codes, in the manner of Gatekeeper's constraint
// template errors: users and the operator's status conditions match on the
// code, and the message names where the problem is.

export const COMPILE_ERROR_CODES = [
  /** A manifest is not YAML, or not a Kubernetes object. */
  'parse_error',
  /** A resource does not validate against its CRD schema or a rule the schema states. */
  'schema_error',
  /** A regular expression RE2 rejects. */
  'regex_error',
  /** Rego that OPA does not compile (raw modules), with OPA's message. */
  'rego_error',
  /** Two resources of one tenant that contradict each other. */
  'conflict_error',
  /** A resource that names something that does not exist. */
  'reference_error',
  /** The opa binary is missing or failed for another reason than the Rego. */
  'tool_error',
] as const;

export type CompileErrorCode = (typeof COMPILE_ERROR_CODES)[number];

/** Where a problem is: the file and document it came from, the resource, the rule and the field. */
export interface ErrorLocation {
  file?: string;
  /** 0-based index of the YAML document in the file. */
  document?: number;
  /** Kind namespace/name of the resource. */
  resource?: string;
  rule?: string;
  /** A field path such as spec.rules[0].when[1].regex. */
  field?: string;
}

export function describeLocation(location: ErrorLocation): string {
  const parts: string[] = [];
  if (location.file !== undefined) {
    parts.push(location.document === undefined ? location.file : `${location.file} document ${location.document}`);
  } else if (location.document !== undefined) {
    parts.push(`document ${location.document}`);
  }
  if (location.resource !== undefined) parts.push(location.resource);
  if (location.rule !== undefined) parts.push(`rule ${location.rule}`);
  if (location.field !== undefined) parts.push(`field ${location.field}`);
  return parts.join(', ');
}

export class CompileError extends Error {
  readonly code: CompileErrorCode;
  readonly location: ErrorLocation;
  readonly detail: string;

  constructor(code: CompileErrorCode, detail: string, location: ErrorLocation = {}, options?: ErrorOptions) {
    const where = describeLocation(location);
    super(`${code}: ${where === '' ? '' : `${where}: `}${detail}`, options);
    this.name = 'CompileError';
    this.code = code;
    this.location = location;
    this.detail = detail;
  }

  /** The same error placed in a file and document, keeping what it already knew. */
  within(location: ErrorLocation): CompileError {
    return new CompileError(this.code, this.detail, { ...location, ...this.location }, { cause: this.cause });
  }
}

/** Several problems found in one pass, so a user fixes them all at once. */
export class CompileErrors extends Error {
  readonly errors: readonly CompileError[];

  constructor(errors: readonly CompileError[]) {
    super(errors.map((e) => e.message).join('\n'));
    this.name = 'CompileErrors';
    this.errors = errors;
  }
}

/** The call to authorize does not have the shape of the authorization contract. */
export class InputError extends Error {
  readonly field: string;

  constructor(field: string, detail: string) {
    super(`invalid input: ${field === '' ? '' : `${field}: `}${detail}`);
    this.name = 'InputError';
    this.field = field;
  }
}
