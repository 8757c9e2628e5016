// JSON as Portcullis reads it from anyone it does not trust: request bodies
// (the sidecar, portcullis eval) and audit lines (audit verify). JSON.parse's
// grammar, plus no duplicate object keys (JSON.parse keeps the last, another
// reader may keep the first: the policy would judge other values than the
// tool acts on, a verifier would check other content than an auditor reads),
// no keys that differ only in letter case (Go's encoding/json and others match
// members case-insensitively), no number a double cannot hold as written, and
// bounded nesting. Pure.

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** Two names a case-insensitive reader takes for one: NFKC (the Kelvin sign is K), then lower case. */
export function foldName(name: string): string {
  // NFKC leaves printable ASCII as it is: most names skip it.
  return (PRINTABLE_ASCII.test(name) ? name : name.normalize('NFKC')).toLowerCase();
}

export class StrictJsonError extends Error {
  override readonly name = 'StrictJsonError';
}

const MAX_DEPTH = 64;
const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const NUMBER_PARTS = /^-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/;

/** The magnitude a decimal numeral denotes: significant digits without leading or trailing zeros, times ten to the exponent ('' for zero). */
function decimalValue(numeral: string): { digits: string; exponent: bigint } {
  const [, whole = '', fraction = '', exponent = '0'] = NUMBER_PARTS.exec(numeral) ?? [];
  const all = `${whole}${fraction}`.replace(/^0+/, '');
  const digits = all.replace(/0+$/, '');
  if (digits === '') return { digits: '', exponent: 0n };
  return { digits, exponent: BigInt(exponent) - BigInt(fraction.length) + BigInt(all.length - digits.length) };
}

/**
 * Why a JSON number cannot be judged, or undefined when it can. A number is
 * taken when the value written is the value of the double it reads as, as
 * that double's shortest round-trip form writes it (String(x)): 1.5, 0.1,
 * 1e3 and 5000.0 are taken; 5000.0000000000000001 (the double 5000),
 * 9007199254740993 (…992), 1e400 (no double) and 1e-400 (0) are not. The
 * shortest forms keep the order of the doubles, so a value taken compares
 * with a bound as a decimal reader would compare it.
 */
export function numberRefusal(numeral: string): string | undefined {
  const value = Number(numeral);
  if (!Number.isFinite(value)) return `the number ${numeral} is beyond the range of a double`;
  const written = decimalValue(numeral);
  const read = decimalValue(String(Math.abs(value)));
  if (written.digits === read.digits && written.exponent === read.exponent) return undefined;
  return `the number ${numeral} is not exactly the double it reads as (${String(value)}): a tool that reads it with more precision would see another value`;
}
const LITERALS = ['true', 'false', 'null'] as const;
// eslint-disable-next-line no-control-regex -- a JSON string may hold neither a raw control character nor an unread escape
const ESCAPE_OR_CONTROL = /[\\\u0000-\u001f]/;

class Scanner {
  private position = 0;
  private readonly text: string;

  constructor(text: string) {
    this.text = text;
  }

  fail(detail: string): never {
    throw new StrictJsonError(`${detail} at position ${this.position}`);
  }

  skipWhitespace(): void {
    while (WHITESPACE.has(this.text.charAt(this.position))) this.position++;
  }

  atEnd(): boolean {
    return this.position >= this.text.length;
  }

  value(depth: number): void {
    if (depth > MAX_DEPTH) this.fail(`nested deeper than ${MAX_DEPTH}`);
    this.skipWhitespace();
    const char = this.text.charAt(this.position);
    if (char === '{') this.object(depth);
    else if (char === '[') this.array(depth);
    else if (char === '"') this.string();
    else this.scalar();
  }

  /** Moves past a string and returns it decoded. */
  string(): string {
    const start = this.position;
    this.position++;
    for (;;) {
      const char = this.text.charAt(this.position);
      if (char === '') this.fail('unterminated string');
      if (char === '\\') this.position += 2;
      else if (char === '"') break;
      else this.position++;
    }
    this.position++;
    const raw = this.text.slice(start + 1, this.position - 1);
    // Most strings hold no escape and no control character: they are their own text.
    if (!ESCAPE_OR_CONTROL.test(raw)) return raw;
    try {
      return JSON.parse(this.text.slice(start, this.position)) as string;
    } catch {
      return this.fail('invalid string');
    }
  }

  private scalar(): void {
    for (const literal of LITERALS) {
      if (this.text.startsWith(literal, this.position)) {
        this.position += literal.length;
        return;
      }
    }
    NUMBER.lastIndex = this.position;
    if (!NUMBER.test(this.text)) this.fail('expected a JSON value');
    const refusal = numberRefusal(this.text.slice(this.position, NUMBER.lastIndex));
    if (refusal !== undefined) this.fail(refusal);
    this.position = NUMBER.lastIndex;
  }

  private expect(char: string): void {
    this.skipWhitespace();
    if (this.text.charAt(this.position) !== char) this.fail(`expected ${JSON.stringify(char)}`);
    this.position++;
  }

  /** Consumes `close` if it comes next (after whitespace). */
  private closes(close: string): boolean {
    this.skipWhitespace();
    if (this.text.charAt(this.position) !== close) return false;
    this.position++;
    return true;
  }

  private object(depth: number): void {
    this.position++;
    const keys = new Map<string, string>();
    if (this.closes('}')) return;
    do {
      this.skipWhitespace();
      if (this.text.charAt(this.position) !== '"') this.fail('expected an object key');
      const key = this.string();
      const other = keys.get(foldName(key));
      if (other === key) this.fail(`duplicate key ${JSON.stringify(key)}`);
      if (other !== undefined) this.fail(`the keys ${JSON.stringify(other)} and ${JSON.stringify(key)} differ only in letter case`);
      keys.set(foldName(key), key);
      this.expect(':');
      this.value(depth + 1);
    } while (this.continues('}'));
  }

  private array(depth: number): void {
    this.position++;
    if (this.closes(']')) return;
    do this.value(depth + 1);
    while (this.continues(']'));
  }

  /** After a member: false at the closing bracket, true after a comma, else a failure. */
  private continues(close: string): boolean {
    if (this.closes(close)) return false;
    this.expect(',');
    return true;
  }
}

/** Parses JSON text, refusing duplicate or case-variant keys, inexact numbers and deep nesting with a StrictJsonError naming the position. */
export function parseStrictJson(text: string): unknown {
  const scanner = new Scanner(text);
  scanner.value(0);
  scanner.skipWhitespace();
  if (!scanner.atEnd()) scanner.fail('unexpected text after the JSON value');
  // The scan checked the structure; JSON.parse checks the rest (escapes, numbers) and builds the value.
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new StrictJsonError(error instanceof Error ? error.message : String(error));
  }
}
