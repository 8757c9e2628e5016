// JSON as Portcullis reads it from anyone it does not trust: request bodies
// (the sidecar) and audit lines (audit verify). JSON.parse's grammar, plus no
// duplicate object keys (JSON.parse keeps the last, another reader may keep the
// first: the policy would judge other values than the tool acts on, a verifier
// would check other content than a reader sees) and bounded nesting. Pure.

export class StrictJsonError extends Error {
  override readonly name = 'StrictJsonError';
}

const MAX_DEPTH = 64;
const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERALS = ['true', 'false', 'null'] as const;

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

  /** Returns the decoded string. */
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
    const keys = new Set<string>();
    if (this.closes('}')) return;
    do {
      this.skipWhitespace();
      if (this.text.charAt(this.position) !== '"') this.fail('expected an object key');
      const key = this.string();
      if (keys.has(key)) this.fail(`duplicate key ${JSON.stringify(key)}`);
      keys.add(key);
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

/** Parses JSON text, refusing duplicate keys and deep nesting with a StrictJsonError naming the position. */
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
