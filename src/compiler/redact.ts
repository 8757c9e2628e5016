// Redaction for `sanitize` decisions: the parameters a tool receives once a rule allowed the call
// with some values removed.
import { childPath, findPii, PII_KINDS, type PiiKind } from './detectors.ts';

export type Redaction = PiiKind | 'pii' | { param: string };

/** What replaces a value redacted by a `{param}` entry. */
export const REDACTED_PARAM = '[REDACTED]';

/** What replaces a value nested deeper than MAX_REDACTION_DEPTH: it cannot be inspected, so it goes. */
export const REDACTED_TOO_DEEP = '[REDACTED:too_deep]';

/** Objects and arrays nested deeper than this are replaced whole (see REDACTED_TOO_DEEP). */
export const MAX_REDACTION_DEPTH = 64;

/** The marker that replaces one PII match, e.g. `[REDACTED:ssn]`. */
export function redactionMarker(kind: PiiKind): string {
  return `[REDACTED:${kind}]`;
}

export interface RedactionResult {
  /** A deep copy of the parameters with the redactions applied. */
  params: unknown;
  /** What was redacted, as `path:kind` (`kind` is a PII kind, `param` or `too_deep`), sorted. */
  redacted: string[];
}

interface RedactionPlan {
  kinds: readonly PiiKind[];
  /** Each `{param}` path split into its segments. */
  paramPaths: readonly (readonly string[])[];
  redacted: Set<string>;
}

/**
 * Applies a rule's `redact:` list to the parameters and returns a redacted deep copy.
 *
 * - A PII kind (`ssn`, `email`, `credit_card`, `phone`, `iban`; `pii` means all five) replaces every
 *   match in every string value with its marker (`[REDACTED:email]`), keeping the text around it.
 *   An integer that holds a match (a card number sent as a number) becomes the marker string.
 * - `{param: 'a.b'}` replaces the whole value at that dotted path (keys split at dots, array
 *   indexes as decimal numbers) with `[REDACTED]`, whatever its type; a path that is not there
 *   redacts nothing.
 * - A value nested deeper than MAX_REDACTION_DEPTH is replaced by `[REDACTED:too_deep]`: what
 *   cannot be inspected is not passed on.
 *
 * Matches are found as findPii finds them: in escaped, encoded and oddly spaced forms too, and the
 * whole written form is replaced; the member's key is the field that makes nine bare digits an SSN
 * (`{"ssn": "078051120"}`). Object keys are kept as they are: the parameters' names are the tool's
 * interface, and the request is rewritten by them (a tool's answer has its keys redacted, see
 * src/sidecar/ext-proc-redaction.ts). `redacted` names paths and kinds,
 * never the removed text. Pure: the input is never modified, `__proto__` and `constructor` keys are
 * copied as own data properties. Never throws on a JSON value. Redacting twice equals redacting once.
 */
export function redact(params: unknown, spec: readonly Redaction[]): RedactionResult {
  const kinds = new Set<PiiKind>();
  const paramPaths: string[][] = [];
  for (const entry of spec) {
    if (typeof entry === 'object') {
      paramPaths.push(entry.param.split('.'));
    } else if (entry === 'pii') {
      PII_KINDS.forEach((kind) => kinds.add(kind));
    } else {
      kinds.add(entry);
    }
  }
  const plan: RedactionPlan = {
    kinds: PII_KINDS.filter((kind) => kinds.has(kind)),
    paramPaths,
    redacted: new Set(),
  };
  const copy = redactValue(plan, params, [], 0);
  return { params: copy, redacted: [...plan.redacted].sort(compareStrings) };
}

function compareStrings(a: string, b: string): number {
  if (a === b) {
    return 0;
  }
  return a < b ? -1 : 1;
}

function pathOf(segments: readonly string[]): string {
  return segments.reduce<string>((path, segment) => childPath(path, segment), '');
}

function isParamTarget(plan: RedactionPlan, segments: readonly string[]): boolean {
  return plan.paramPaths.some(
    (target) => target.length === segments.length && target.every((segment, index) => segment === segments[index]),
  );
}

function redactValue(plan: RedactionPlan, value: unknown, segments: readonly string[], depth: number, field?: string): unknown {
  const path = pathOf(segments);
  if (segments.length > 0 && isParamTarget(plan, segments)) {
    plan.redacted.add(`${path}:param`);
    return REDACTED_PARAM;
  }
  if (typeof value === 'string') {
    return redactText(plan, value, path, field);
  }
  // An integer can carry a card number, a 19-digit one beyond 2^53 too: read as JavaScript writes
  // it, every digit (below 10^21, where it would switch to an exponent), as the answer's reader does.
  if (typeof value === 'number' && Number.isInteger(value) && Math.abs(value) < 1e21) {
    const text = String(value);
    const redacted = redactText(plan, text, path, field);
    return redacted === text ? value : redacted;
  }
  if (typeof value !== 'object' || value === null) {
    return value;
  }
  if (depth >= MAX_REDACTION_DEPTH) {
    plan.redacted.add(`${path}:too_deep`);
    return REDACTED_TOO_DEEP;
  }
  if (Array.isArray(value)) {
    return value.map((item: unknown, index) => redactValue(plan, item, [...segments, String(index)], depth + 1));
  }
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    // defineProperty, not assignment: assigning to "__proto__" would replace the copy's prototype.
    Object.defineProperty(copy, key, {
      value: redactValue(plan, (value as Record<string, unknown>)[key], [...segments, key], depth + 1, key),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return copy;
}

function redactText(plan: RedactionPlan, text: string, path: string, field: string | undefined): string {
  if (plan.kinds.length === 0) {
    return text;
  }
  const matches = findPii(text, plan.kinds, field === undefined ? {} : { field });
  let redacted = '';
  let copiedUpTo = 0;
  for (const match of matches) {
    redacted += text.slice(copiedUpTo, match.start) + redactionMarker(match.kind);
    copiedUpTo = match.end;
    plan.redacted.add(`${path}:${match.kind}`);
  }
  return redacted + text.slice(copiedUpTo);
}
