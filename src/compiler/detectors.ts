// Threat detectors behind `threat:` conditions, and the PII finders behind `sanitize` redaction.
//
// Every detector is a pure, deterministic function of its input: no clocks, no randomness, no
// locale. They run on the sidecar for every call, so each is linear in the length of the text
// (bounded regular expressions, no nested unbounded quantifiers) and the walk over the parameters
// is bounded by the limits below.
import { THREATS } from '../api/index.ts';

export type Threat = (typeof THREATS)[number];

export type PiiKind = 'ssn' | 'email' | 'credit_card' | 'phone' | 'iban';

export const PII_KINDS: readonly PiiKind[] = ['ssn', 'email', 'credit_card', 'phone', 'iban'];

/** A PII match in a string: `text.slice(start, end)` is the matched value. */
export interface PiiMatch {
  kind: PiiKind;
  start: number;
  end: number;
}

/**
 * Bounds on how much of a parameter tree is scanned.
 *
 * Past any bound the detectors fail closed: the path where scanning stopped is reported as
 * tripping every detector, so a `threat:` condition holds (a deny rule denies) rather than an
 * unscanned payload passing as clean. Oversized input is itself a signal worth acting on.
 * - `maxDepth`: objects and arrays nested deeper than this are not entered; the path of the
 *   first container past the bound is reported.
 * - `maxStrings`: at most this many strings (values and object keys) are scanned; the walk stops
 *   at the first string past the bound and reports its path.
 * - `maxStringLength`: a longer string is not scanned; its path is reported.
 * - `maxTotalLength`: the sum of scanned string lengths; the walk stops at the string that would
 *   exceed it and reports its path.
 */
export interface ScanLimits {
  maxDepth: number;
  maxStrings: number;
  maxStringLength: number;
  maxTotalLength: number;
}

export const DEFAULT_SCAN_LIMITS: Readonly<ScanLimits> = {
  maxDepth: 64,
  maxStrings: 10_000,
  maxStringLength: 256 * 1024,
  maxTotalLength: 4 * 1024 * 1024,
};

/**
 * Removes the characters an attacker inserts to split a phrase without changing how it reads:
 * zero-width space / joiners, word joiner, BOM, soft hyphen, Mongolian vowel separator, and the
 * bidirectional controls.
 */
const INVISIBLE = /[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff]/gu;

/** NFKC (so full-width and other compatibility forms read as ASCII), invisible characters removed. */
function canonicalText(text: string): string {
  return text.normalize('NFKC').replace(INVISIBLE, '');
}

/** canonicalText, lower case, every run of whitespace one space. */
function foldedText(text: string): string {
  return canonicalText(text).toLowerCase().replace(/\s+/gu, ' ');
}

// ---------------------------------------------------------------------------------------------
// Prompt injection
// ---------------------------------------------------------------------------------------------

/**
 * Prompt injection: phrases that try to override the instructions of the model that reads the
 * parameter. Text is NFKC-normalized, invisible characters are removed, case is folded and
 * whitespace collapsed before matching, so "IGNORE\u200b previous\n\ninstructions" matches.
 *
 * Caught:
 * - ignore / disregard / forget / override / bypass (all | any | the | your …) previous / prior /
 *   above / earlier / preceding / system instructions, prompts, rules, directions, context;
 *   "ignore (all of) the above"
 * - disregard / forget / override the system (or developer) prompt, message, instructions
 * - reveal / show / print / repeat / leak … your system (initial, hidden, original) prompt or
 *   instructions; "what is your system prompt"
 * - role reassignment: "you are now DAN", "you are now an unrestricted / unfiltered / jailbroken
 *   AI", "you are now in developer mode", "from now on you are …", "act as an unrestricted …",
 *   "pretend you have no restrictions"
 * - jailbreak vocabulary: jailbreak, "do anything now", DAN (upper case as a word), "DAN mode",
 *   "developer mode enabled"
 * - chat-template and role tags: `<system>`, `</system>`, `<assistant>`, `<|im_start|>`,
 *   `<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<|start_header_id|>`, `[INST]`, `<<SYS>>`
 *
 * Not flagged: ordinary prose that shares words, e.g. "you are now logged in", "please ignore
 * the typo", "previous instructions are attached", "Dan will review it".
 */
const PROMPT_INJECTION_PATTERNS: readonly RegExp[] = [
  /\b(?:ignore|disregard|forget|override|bypass|skip|do not follow|don't follow) (?:(?:all|any|each|every|of|the|your|my|these|those|its|their) ){0,4}(?:previous|prior|above|earlier|preceding|former|original|initial|system|foregoing)(?: \w+)? (?:instructions?|prompts?|directions?|rules|guidelines|guidance|messages?|context|commands?|orders)\b/u,
  /\b(?:ignore|disregard|forget) (?:all )?(?:of )?(?:the |everything )?above\b/u,
  /\b(?:disregard|forget|override|ignore|bypass) (?:the |your |any |all )?(?:system|developer|safety) (?:prompt|message|instructions?|rules|guidelines|polic(?:y|ies))\b/u,
  /\b(?:reveal|show|print|repeat|output|display|leak|dump|expose|tell me|give me|what is|what are|what's) (?:me )?(?:all )?(?:of )?(?:your|the) (?:full |entire |exact )?(?:system (?:prompt|instructions?|message)|(?:initial|hidden|secret|internal|developer) (?:prompt|instructions))\b/u,
  /\byou are now (?:dan\b|in (?:developer|god|dan|jailbreak|unrestricted|unfiltered) mode|(?:an? |the )?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|unaligned|different|new) (?:ai|assistant|model|chatbot|bot|persona|language model|llm)\b|free (?:from|of) (?:all |any |your )?(?:rules|restrictions|guidelines|limits)|no longer (?:bound|restricted|limited))/u,
  /\bfrom now on,? you (?:are|will be|will act as|must act as) (?:an? )?(?:dan\b|unrestricted|unfiltered|uncensored|jailbroken|evil|different|new)/u,
  /\b(?:act|behave|respond) as (?:if you were )?(?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned) (?:ai|assistant|model|chatbot|bot|llm)\b/u,
  /\bpretend (?:that )?you (?:are|have) (?:no|not any) (?:restrictions|rules|limits|limitations|guidelines|filters)\b/u,
  /\bjailbr(?:eak|oken|eaking|eaks)\b/u,
  /\bdo anything now\b/u,
  /\b(?:dan|developer|god) mode (?:enabled|activated|on)\b/u,
  /<\/? ?(?:system|assistant|developer) ?>/u,
  /<\| ?(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text) ?\|>/u,
  /\[\/?inst\]|<<\/?sys>>/u,
];

/** "DAN" written as an upper-case word: the jailbreak persona, not the given name "Dan". */
const DAN_PERSONA = /\bDAN\b/u;

export function isPromptInjection(text: string): boolean {
  const folded = foldedText(text);
  if (PROMPT_INJECTION_PATTERNS.some((pattern) => pattern.test(folded))) {
    return true;
  }
  return DAN_PERSONA.test(canonicalText(text));
}

// ---------------------------------------------------------------------------------------------
// SQL injection
// ---------------------------------------------------------------------------------------------

/**
 * SQL injection: fragments that only make sense as an attempt to break out of a SQL literal or
 * to add a statement. Matched on NFKC text, case folded, whitespace collapsed, and again with
 * inline comments (`/ ** /`) read as a space and with URL percent-escapes decoded once, so
 * `UNION/ ** /SELECT` and `%27%20OR%201%3D1` are caught.
 *
 * Caught:
 * - tautologies after a quote: `' OR 1=1`, `' OR 'a'='a`, `" or ""="`, `') or ('x'='x`,
 *   `' OR true`, `' AND 1=0`; and unquoted `OR 1=1` / `AND 2=2` (same number both sides)
 * - `UNION [ALL|DISTINCT] SELECT`
 * - stacked statements: `; DROP TABLE`, `; DELETE FROM`, `; INSERT INTO`, `; UPDATE x SET`,
 *   `; TRUNCATE`, `; ALTER TABLE`, `; EXEC xp_…`, `; SHUTDOWN`, `; SELECT … FROM`
 * - a comment terminator right after a quote: `admin'--`, `'#` at the end, `'/*`
 * - time and file probes: `SLEEP(5)`, `PG_SLEEP(`, `BENCHMARK(1000000,`, `WAITFOR DELAY`,
 *   `LOAD_FILE(`, `INTO OUTFILE`, `xp_cmdshell`, `information_schema.`, `@@version`
 *
 * Not flagged: prose such as "I'd like to select one or two items", "Union Square",
 * "rock 'n' roll -- live", "get some sleep (8h)", "drop table tennis; update me".
 */
const SQL_INJECTION_PATTERNS: readonly RegExp[] = [
  /['"`] ?\)* ?(?:or|and|\|\||&&|xor) ?\(? ?(?:(?:['"`]\w*['"`]|\w+) ?(?:=|<>|!=|<=?|>=?|like) ?\(?['"`]?\w*|\d+ ?(?:--|#|\/\*|;|$))/u,
  /['"`] ?\)* ?(?:or|\|\|) true\b/u,
  /\b(?:or|and|\|\|) (\d+) ?= ?\1\b/u,
  /\bunion (?:all |distinct )?\(? ?select\b/u,
  /; ?(?:drop|truncate|alter|create) (?:table|database|schema|index|view|user|procedure|function)\b/u,
  /; ?(?:delete from|insert into|update \w+ set|shutdown\b|(?:exec|execute) (?:xp_|sp_|master\.|\())/u,
  /; ?select (?:\*|[\w.]+(?: ?, ?[\w.]+)+) from\b/u,
  /['"`]\)*;?(?:--(?: |$)|#$|\/\*)/u,
  /['"`] ?;? ?(?:drop|truncate) table\b/u,
  /\b(?:pg_)?sleep\( ?\d+(?:\.\d+)? ?\)|\bbenchmark\( ?\d+ ?,|\bwaitfor (?:delay|time) ['"]/u,
  /\bload_file ?\(|\binto (?:out|dump)file\b|\bxp_cmdshell\b|\binformation_schema\.|@@version\b/u,
];

/** Decodes every `%XX` escape, leaving malformed ones as written. Never throws. */
function percentDecodeBytes(text: string): string {
  return text.replace(/%([0-9a-f]{2})/giu, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
}

export function isSqlInjection(text: string): boolean {
  const folded = foldedText(text);
  const variants = [folded, folded.replace(/\/\*.*?\*\//gu, ' ').replace(/ {2,}/gu, ' ')];
  if (folded.includes('%')) {
    variants.push(foldedText(percentDecodeBytes(folded)));
  }
  return variants.some((variant) => SQL_INJECTION_PATTERNS.some((pattern) => pattern.test(variant)));
}

// ---------------------------------------------------------------------------------------------
// Path traversal
// ---------------------------------------------------------------------------------------------

/** How many times escapes are decoded: enough for double and triple encoding. */
const MAX_DECODE_ROUNDS = 4;

/** Overlong UTF-8 and IIS `%u` encodings of `.`, `/` and `\`. */
const OVERLONG_ESCAPES: readonly [RegExp, string][] = [
  [/%c0%ae|%e0%80%ae|%f0%80%80%ae|%c0%2e|%u002e|%uff0e/giu, '.'],
  [/%c0%af|%e0%80%af|%f0%80%80%af|%c0%2f|%u002f|%u2215|%uff0f/giu, '/'],
  [/%c1%9c|%c1%1c|%c0%5c|%e0%81%9c|%u005c|%u2216|%uff3c/giu, '\\'],
];

function decodeOnce(text: string): string {
  let decoded = text;
  for (const [pattern, replacement] of OVERLONG_ESCAPES) {
    decoded = decoded.replace(pattern, replacement);
  }
  return percentDecodeBytes(decoded);
}

/** The text and each successive decoding of it, NFKC-normalized, until it stops changing. */
function decodings(text: string): string[] {
  const seen = [canonicalText(text)];
  let current = text;
  for (let round = 0; round < MAX_DECODE_ROUNDS; round++) {
    const next = decodeOnce(current);
    if (next === current) {
      break;
    }
    current = next;
    seen.push(canonicalText(next));
  }
  return seen;
}

/** `..` as a whole path segment: `../`, `..\`, `/..` at the end, or `..` alone. */
const DOT_DOT_SEGMENT = /(?:^|[\\/\s=:'"])\.\.(?:[\\/]|$)/u;
const SENSITIVE_PATHS =
  /(?:^|[\s=:'"]|file:\/\/)(?:\/etc\/(?:passwd|shadow|group|sudoers|hosts)\b|\/proc\/(?:self|\d+)\/|\/root\/|\/var\/run\/secrets\/|~\/\.ssh\/|[a-z]:[\\/](?:windows[\\/](?:system32|win\.ini)|boot\.ini))/iu;

/**
 * Path traversal: a parameter that names a file outside the directory the tool means.
 * The text is percent-decoded repeatedly (up to four rounds, so `%252e%252e%252f` is caught), with
 * overlong UTF-8 (`%c0%ae`, `%c0%af`, `%c1%9c`) and IIS `%u002e` forms read as `.`, `/` and `\`,
 * and NFKC applied (full-width `．．／`). Each decoding is checked, and so is the text after one
 * naive removal of `../` (so `....//` is caught).
 *
 * Caught: `..` as a path segment with `/` or `\` (`../etc`, `..\win.ini`, `a/..`), any of the
 * encodings above, a NUL byte (`%00` or a raw U+0000) used to cut off a suffix, and absolute paths to
 * well-known sensitive files (`/etc/passwd`, `/etc/shadow`, `/proc/self/`, `/root/`,
 * `/var/run/secrets/`, `~/.ssh/`, `C:\Windows\System32`, `boot.ini`).
 *
 * Not flagged: "wait...", "v1..v2", "1..10", "./config.json", "docs/guide.md", "/var/log/app.log".
 */
export function isPathTraversal(text: string): boolean {
  for (const decoded of decodings(text)) {
    if (decoded.includes('\u0000')) {
      return true;
    }
    const filtered = decoded.replace(/\.\.[\\/]/gu, '');
    if (DOT_DOT_SEGMENT.test(decoded) || DOT_DOT_SEGMENT.test(filtered) || SENSITIVE_PATHS.test(decoded)) {
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// PII
// ---------------------------------------------------------------------------------------------

/**
 * A text as the PII finders read it, with the span of the original text each of its characters
 * came from, so a match in the reading is redacted in the original, encoded form and all.
 */
export interface Reading {
  text: string;
  /** Where in the original text the character at each index of `text` begins and ends; absent when it is the original. */
  from?: number[];
  to?: number[];
}

/** Where in the original text the character at `index` of a reading begins. */
export function readingStart(reading: Reading, index: number): number {
  return reading.from === undefined ? index : (reading.from[index] ?? 0);
}

/** Where in the original text the character at `index` of a reading ends. */
function readingEnd(reading: Reading, index: number): number {
  return reading.to === undefined ? index + 1 : (reading.to[index] ?? 0);
}

/** A reading under construction. */
interface Built {
  text: string;
  from: number[];
  to: number[];
}

/** Appends `text` to a reading under construction, every character of it standing for [start, end) of the original. */
function appendSpan(out: Built, text: string, start: number, end: number): void {
  for (let index = 0; index < text.length; index++) {
    out.text += text.charAt(index);
    out.from.push(start);
    out.to.push(end);
  }
}

/** Named HTML character references for the characters PII is written with (HTML5 names). */
const HTML_ENTITIES: Readonly<Record<string, string>> = {
  commat: '@', period: '.', hyphen: '-', dash: '-', minus: '-', lowbar: '_', plus: '+', percnt: '%',
  num: '#', nbsp: ' ', amp: '&', lpar: '(', rpar: ')', sol: '/', colon: ':', equals: '=', excl: '!',
  quot: '"', apos: "'", lt: '<', gt: '>', lsqb: '[', rsqb: ']', lbrack: '[', rbrack: ']', ensp: ' ',
  emsp: ' ', thinsp: ' ', zwsp: '', zwnj: '', zwj: '', shy: '', Tab: '\t', NewLine: '\n',
};

/**
 * Escapes that write a character another way: HTML character references (`&#64;`, `&#x40;`,
 * `&commat;`), percent-encoding (`%40`, and UTF-8 sequences such as `%C2%A0`), JavaScript and JSON
 * escapes (`\u0040`, `\x40`, `\u{40}`), and the bracketed `[at]` / `(dot)` of addresses written
 * for people.
 */
const ESCAPE =
  /&(?:#(\d{1,7});?|#[xX]([0-9a-fA-F]{1,6});?|([A-Za-z]{2,8});)|((?:%[0-9A-Fa-f]{2})+)|\\u([0-9a-fA-F]{4})|\\u\{([0-9a-fA-F]{1,6})\}|\\x([0-9a-fA-F]{2})| ?[[({] ?(at|dot) ?[\])}] ?/giu;

function codePointText(code: number): string | undefined {
  return code <= 0x10ffff && (code < 0xd800 || code > 0xdfff) ? String.fromCodePoint(code) : undefined;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A run of `%XX` escapes, decoded character by character (each one standing for its own escapes); undefined bytes stay as written. */
function appendPercentRun(out: Built, reading: Reading, run: string, at: number): void {
  const bytes = run.split('%').slice(1).map((hex) => Number.parseInt(hex, 16));
  let index = 0;
  while (index < bytes.length) {
    const lead = bytes[index] ?? 0;
    const length = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    let decoded: string | undefined;
    try {
      decoded = UTF8.decode(new Uint8Array(bytes.slice(index, index + length)));
    } catch {
      decoded = undefined;
    }
    const start = at + index * 3;
    const taken = decoded === undefined ? 1 : length;
    const end = start + taken * 3;
    appendSpan(out, decoded ?? run.slice(index * 3, index * 3 + 3), readingStart(reading, start), readingEnd(reading, end - 1));
    index += taken;
  }
}

/** What one ESCAPE match stands for; undefined when it is not an escape after all (`&bogus;`, `&#xD800;`). */
function unescaped(groups: (string | undefined)[]): string | undefined {
  const [decimal, hex, name, , unicode, braced, byte, word] = groups;
  if (decimal !== undefined) return codePointText(Number.parseInt(decimal, 10));
  if (hex !== undefined) return codePointText(Number.parseInt(hex, 16));
  if (name !== undefined) return HTML_ENTITIES[name] ?? HTML_ENTITIES[name.toLowerCase()];
  const code = unicode ?? braced ?? byte;
  if (code !== undefined) return codePointText(Number.parseInt(code, 16));
  if (word !== undefined) return word.toLowerCase() === 'at' ? '@' : '.';
  return undefined;
}

/** One round of ESCAPE decoding over a reading. */
function decodeEscapes(reading: Reading): Reading {
  const out: Built = { text: '', from: [], to: [] };
  let copied = 0;
  const copyUpTo = (end: number): void => {
    for (let index = copied; index < end; index++) appendSpan(out, reading.text.charAt(index), readingStart(reading, index), readingEnd(reading, index));
    copied = end;
  };
  for (const match of reading.text.matchAll(ESCAPE)) {
    copyUpTo(match.index);
    const end = match.index + match[0].length;
    const percent = match[4];
    if (percent !== undefined) {
      appendPercentRun(out, reading, percent, match.index);
      copied = end;
      continue;
    }
    const decoded = unescaped(match.slice(1));
    if (decoded === undefined) continue;
    appendSpan(out, decoded, readingStart(reading, match.index), readingEnd(reading, end - 1));
    copied = end;
  }
  copyUpTo(reading.text.length);
  return out;
}

/** Escapes are decoded this many times at most: enough for `&amp;#64;` and `%2540`. */
const MAX_ESCAPE_ROUNDS = 3;

/** Characters that change nothing a reader sees: zero-width space and joiners, word joiner, BOM, soft hyphen, bidirectional controls. */
const INVISIBLE_CHAR = /^[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff]$/u;
/** Every kind of space (NBSP, narrow NBSP, en/em/thin spaces, ideographic space, …) reads as a plain space. */
const SPACE_CHAR = /^[\p{Zs}]$/u;
/** Hyphens, dashes and minus signs read as `-`. */
const DASH_CHAR = /^[\u2010-\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d]$/u;

/** Per character: invisible ones dropped, spaces and dashes made ASCII, every other non-ASCII character in NFKC (full-width digits read as digits). */
function foldCharacters(reading: Reading): Reading {
  const out: Built = { text: '', from: [], to: [] };
  let index = 0;
  for (const char of reading.text) {
    const start = readingStart(reading, index);
    const end = readingEnd(reading, index + char.length - 1);
    index += char.length;
    if (char.charCodeAt(0) < 0x80) {
      appendSpan(out, char, start, end);
    } else if (!INVISIBLE_CHAR.test(char)) {
      const folded = SPACE_CHAR.test(char) ? ' ' : DASH_CHAR.test(char) ? '-' : char.normalize('NFKC');
      appendSpan(out, folded, start, end);
    }
  }
  return out;
}

/** Text the finders may read as it is: printable ASCII with nothing that could be an escape. */
const PLAIN = /^[\x20-\x7e\t\n\r]*$/u;
const MAYBE_ESCAPED = /[&%\\]|[[({] ?(?:at|dot) ?[\])}]/iu;

/**
 * The text as the PII finders read it: escapes decoded (up to three rounds), invisible characters
 * removed, every space and dash made ASCII, NFKC. `4111\u00a01111…`, `4111\u200b1111…`,
 * `dana&#64;example.com`, `dana%40example.com` and `dana\u0040example.com` all read as what they
 * show.
 */
export function piiReading(text: string): Reading {
  if (PLAIN.test(text) && !MAYBE_ESCAPED.test(text)) return { text };
  let reading: Reading = { text };
  for (let round = 0; round < MAX_ESCAPE_ROUNDS && MAYBE_ESCAPED.test(reading.text); round++) {
    const next = decodeEscapes(reading);
    if (next.text === reading.text) break;
    reading = next;
  }
  return PLAIN.test(reading.text) ? reading : foldCharacters(reading);
}

/** Labels that say the nine digits after them are an SSN: `SSN`, `SS#`, `social security (number)`, `tax(payer) id`, `TIN`. */
const SSN_LABEL = /\b(?:ssn|ss#|ss no|soc(?:ial)? ?sec(?:urity)?(?: (?:number|num|no|#))?|tax ?(?:payer )?id(?:entification)?(?: (?:number|no))?|tin)\b/iu;
/** A field name that says its value is an SSN: `ssn`, `patientSsn`, `social_security_number`, `taxId`, `tin`. */
export function namesSsn(field: string): boolean {
  const letters = field.toLowerCase().replace(/[^a-z]/gu, '');
  return letters.includes('ssn') || letters.includes('socialsec') || letters.includes('socsec') || letters.includes('taxid') || letters.includes('taxpayerid') || letters === 'tin';
}

/** What the finders know besides the text: the name of the field it is the value of. */
export interface PiiContext {
  /** The field (JSON key, form name) the text is the value of: a field named for SSNs makes nine bare digits an SSN. */
  field?: string;
}

/**
 * US Social Security numbers: `AAA-GG-SSSS` with one separator style (`-`, space, `.` or `/`), or
 * nine bare digits when something says they are an SSN: a label up to 24 characters before them
 * (`SSN`, `SSN:`, `SS#`, `social security number is`, `tax id`, `TIN`), or the field they are the
 * value of (`ssn`, `patientSsn`, `social_security_number`, `taxId`). Numbers that were never issued
 * are not flagged: area 000, 666 or 900–999, group 00, serial 0000. Nine bare digits with nothing
 * naming them are not flagged: order, account and routing numbers look alike (the redaction
 * benchmark measures that rule against the corpus).
 */
export function findSsns(text: string, context: PiiContext = {}): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const match of text.matchAll(/(?<!\d[-./]?)(\d{3})([- ./])(\d{2})\2(\d{4})(?![-./]?\d)/gu)) {
    if (isIssuableSsn(match[1] ?? '', match[3] ?? '', match[4] ?? '')) {
      matches.push({ kind: 'ssn', start: match.index, end: match.index + match[0].length });
    }
  }
  const named = context.field !== undefined && namesSsn(context.field);
  for (const match of text.matchAll(/(?<!\d)\d{9}(?!\d)/gu)) {
    const digits = match[0];
    if (!isIssuableSsn(digits.slice(0, 3), digits.slice(3, 5), digits.slice(5))) continue;
    const before = text.slice(Math.max(0, match.index - 40), match.index);
    const labelled = /[^\d]{0,24}$/u.exec(before)?.[0] ?? '';
    if (named || SSN_LABEL.test(labelled)) matches.push({ kind: 'ssn', start: match.index, end: match.index + 9 });
  }
  return matches;
}

function isIssuableSsn(area: string, group: string, serial: string): boolean {
  return area !== '000' && area !== '666' && !area.startsWith('9') && group !== '00' && serial !== '0000';
}

const EMAIL_LOCAL_CHAR = /[A-Za-z0-9._%+-]/u;
const EMAIL_DOMAIN_CHAR = /[A-Za-z0-9.-]/u;
/** RFC 5321: a local part is at most 64 characters, a domain at most 255. */
export const MAX_EMAIL_LOCAL = 64;
const MAX_EMAIL_DOMAIN = 255;

/**
 * E-mail addresses: `local@domain.tld`, the local part at most 64 characters, the domain made of
 * dot-separated labels of letters, digits and hyphens, ending in a top-level domain of two or more
 * letters. Found by scanning out from each `@` (linear in the text, no backtracking); leading and
 * trailing dots are not part of the match.
 */
export function findEmails(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  let at = text.indexOf('@');
  let searchFrom = 0;
  while (at !== -1) {
    const match = emailAround(text, at, searchFrom);
    if (match !== undefined) {
      matches.push(match);
      searchFrom = match.end;
    }
    at = text.indexOf('@', Math.max(at + 1, searchFrom));
  }
  return matches;
}

function emailAround(text: string, at: number, notBefore: number): PiiMatch | undefined {
  let start = at;
  const floor = Math.max(notBefore, at - MAX_EMAIL_LOCAL);
  while (start > floor && EMAIL_LOCAL_CHAR.test(text.charAt(start - 1))) {
    start--;
  }
  while (text.charAt(start) === '.' && start < at) {
    start++;
  }
  let end = at + 1;
  while (end < text.length && end - at <= MAX_EMAIL_DOMAIN && EMAIL_DOMAIN_CHAR.test(text.charAt(end))) {
    end++;
  }
  while (end > at + 1 && (text.charAt(end - 1) === '.' || text.charAt(end - 1) === '-')) {
    end--;
  }
  if (start === at || !/^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$/u.test(text.slice(at + 1, end))) {
    return undefined;
  }
  return { kind: 'email', start, end };
}

/** The Luhn (mod 10) check used by payment card numbers. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let index = 0; index < digits.length; index++) {
    let digit = digits.charCodeAt(digits.length - 1 - index) - 48;
    if (index % 2 === 1) {
      digit *= 2;
      if (digit > 9) {
        digit -= 9;
      }
    }
    sum += digit;
  }
  return sum % 10 === 0;
}

interface DigitGroup {
  start: number;
  end: number;
  digits: string;
  /** The separator written before this group ('' for the first). */
  before: string;
}

/** A card number: 13–19 digits, Luhn-valid, not one digit repeated, issued by a network (first digit 2–6). */
function isCardNumber(digits: string): boolean {
  return digits.length >= 13 && digits.length <= 19 && /^[2-6]/u.test(digits) && luhnValid(digits) && !/^(\d)\1*$/u.test(digits);
}

/** The card numbers in one run of digit groups: the whole run, or a stretch of whole groups of three digits or more. */
function cardsInRun(groups: readonly DigitGroup[]): PiiMatch[] {
  const whole = groups.map((group) => group.digits).join('');
  const first = groups[0];
  const last = groups.at(-1);
  const styles = new Set(groups.slice(1).map((group) => group.before));
  if (first !== undefined && last !== undefined && styles.size <= 1 && isCardNumber(whole)) {
    return [{ kind: 'credit_card', start: first.start, end: last.end }];
  }
  const matches: PiiMatch[] = [];
  let from = 0;
  while (from < groups.length) {
    let found: number | undefined;
    let digits = '';
    for (let to = from; to < groups.length; to++) {
      const group = groups[to];
      if (group === undefined || group.digits.length < 3 || (to > from + 1 && group.before !== groups[from + 1]?.before)) break;
      digits += group.digits;
      if (digits.length > 19) break;
      if (isCardNumber(digits)) found = to;
    }
    const start = groups[from];
    const end = found === undefined ? undefined : groups[found];
    if (found === undefined || start === undefined || end === undefined) {
      from++;
      continue;
    }
    matches.push({ kind: 'credit_card', start: start.start, end: end.end });
    from = found + 1;
  }
  return matches;
}

/**
 * Payment card numbers: 13 to 19 digits that pass the Luhn check, start with a digit a card network
 * issues (2–6: Mastercard, Amex, Diners, JCB, Visa, Maestro, Discover, UnionPay) and are not one
 * digit repeated. The digits may be grouped by one separator style: one or two of space, `-`, `.`
 * or `/` (any Unicode space, and zero-width characters, read as nothing or a space before). A run
 * of groups counts as a whole; inside a longer run, a stretch of whole groups of three or more
 * digits that is a card number counts (`ref 12 4111 1111 1111 1111 7`). A run of digits without
 * separators longer than 19 is no card.
 */
export function findCardNumbers(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const run of text.matchAll(/\d+(?:[ ./-]{1,2}\d+)*/gu)) {
    const groups: DigitGroup[] = [];
    for (const group of run[0].matchAll(/([ ./-]*)(\d+)/gu)) {
      const start = run.index + group.index + (group[1]?.length ?? 0);
      groups.push({ start, end: start + (group[2]?.length ?? 0), digits: group[2] ?? '', before: group[1] ?? '' });
    }
    matches.push(...cardsInRun(groups));
  }
  return matches;
}

/**
 * Phone numbers:
 * - international (E.164 style): `+`, then 8 to 15 digits, optionally grouped by single spaces,
 *   dots or dashes, with at most one parenthesized group: `+14155552671`, `+44 20 7946 0958`,
 *   `+1 (415) 555-2671`
 * - national with separators: an optional parenthesized area code then three groups, the last two
 *   of 3–4 digits, 10 or 11 digits in all: `(415) 555-2671`, `415-555-2671`, `415.555.2671`,
 *   `020 7946 0958`
 * Not flagged: bare digit runs ("4155552671", order ids), short local numbers ("555-1234"), dates
 * ("2024-01-15", "15.01.2024"), IPv4 addresses, version numbers.
 */
export function findPhoneNumbers(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const match of text.matchAll(/(?<![\w+.-])\+\d(?:[ .-]?(?:\(\d{1,4}\)|\d)){7,16}(?!\d|[.-]\d)/gu)) {
    const written = match[0];
    const digits = written.replace(/\D/gu, '').length;
    if (digits >= 8 && digits <= 15) {
      matches.push({ kind: 'phone', start: match.index, end: match.index + written.length });
    }
  }
  for (const match of text.matchAll(/(?<![\w+.-]|\d[ .-])(?:\(\d{2,5}\) ?|\d{2,5}[ .-])\d{3,4}[ .-]\d{3,4}(?!\d|[.-]\d|[ ]\d)/gu)) {
    const digits = match[0].replace(/\D/gu, '').length;
    if (digits >= 10 && digits <= 11) {
      matches.push({ kind: 'phone', start: match.index, end: match.index + match[0].length });
    }
  }
  return matches;
}

/** IBAN length by country (ISO 13616 registry). A country not listed is accepted at 15–34. */
const IBAN_LENGTHS: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BR: 29, BY: 28, CH: 21,
  CR: 22, CY: 28, CZ: 24, DE: 22, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FO: 18, FR: 27,
  GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26,
  IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20, LV: 21, MC: 27, MD: 24,
  ME: 22, MK: 19, MR: 27, MT: 31, MU: 30, NL: 18, NO: 15, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29,
  RO: 24, RS: 22, SA: 24, SC: 31, SE: 24, SI: 19, SK: 24, SM: 27, ST: 25, SV: 28, TL: 23, TN: 24,
  TR: 26, UA: 29, VA: 22, VG: 24, XK: 20,
};

/** ISO 7064 mod 97-10 over an IBAN without spaces, upper case: valid when the remainder is 1. */
export function ibanChecksumValid(iban: string): boolean {
  const rearranged = iban.slice(4) + iban.slice(0, 4);
  let remainder = 0;
  for (const char of rearranged) {
    const value = Number.parseInt(char, 36);
    if (Number.isNaN(value)) {
      return false;
    }
    remainder = (value > 9 ? remainder * 100 + value : remainder * 10 + value) % 97;
  }
  return remainder === 1;
}

/**
 * IBANs: two letters, two check digits, then the account part, optionally grouped by single
 * spaces (`DE89 3704 0044 0532 0130 00`), with the registry length of the country (15–34 when the
 * country is not in the table) and a valid ISO 7064 mod-97 checksum. Case-insensitive.
 */
export function findIbans(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  const candidates = /\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}/gu;
  for (let match = candidates.exec(text); match !== null; match = candidates.exec(text)) {
    const found = ibanPrefix(match[0]);
    // A candidate may run on into the next word or the next IBAN: resume right after what matched.
    candidates.lastIndex = match.index + (found ?? 1);
    if (found !== undefined) {
      matches.push({ kind: 'iban', start: match.index, end: match.index + found });
    }
  }
  return matches;
}

/** The length of the longest prefix of a candidate that is a valid IBAN ending at a word boundary. */
function ibanPrefix(candidate: string): number | undefined {
  const country = candidate.slice(0, 2).toUpperCase();
  const known = IBAN_LENGTHS[country];
  let compact = '';
  const validEnds: number[] = [];
  for (let index = 0; index < candidate.length; index++) {
    const char = candidate.charAt(index);
    if (char === ' ') {
      continue;
    }
    compact += char.toUpperCase();
    const atBoundary = !/[A-Za-z0-9]/u.test(candidate.charAt(index + 1));
    const lengthFits = known === undefined ? compact.length >= 15 && compact.length <= 34 : compact.length === known;
    if (atBoundary && lengthFits && ibanChecksumValid(compact)) {
      validEnds.push(index + 1);
    }
  }
  return validEnds.at(-1);
}

const PII_FINDERS: Readonly<Record<PiiKind, (text: string, context: PiiContext) => PiiMatch[]>> = {
  iban: findIbans,
  credit_card: findCardNumbers,
  ssn: findSsns,
  email: findEmails,
  phone: findPhoneNumbers,
};

/** When matches of two kinds overlap, the earlier kind here wins (it is the more specific check). */
const PII_PRECEDENCE: readonly PiiKind[] = ['iban', 'credit_card', 'ssn', 'email', 'phone'];

/** base64 (standard or URL-safe) long enough to hold a value: 12 characters encode 9 bytes (an SSN's digits). */
const BASE64_RUN = /(?<![A-Za-z0-9+/=_-])(?=[A-Za-z0-9+/=_-]{12})(?:[A-Za-z0-9+/]+={0,2}|[A-Za-z0-9_-]+)(?![A-Za-z0-9+/=_-])/gu;
/** Longer base64 runs (images, files) are not decoded. */
export const MAX_BASE64_RUN = 64 * 1024;
/** base64 inside base64 is decoded once more, no deeper. */
const MAX_BASE64_DEPTH = 2;

/** The texts a base64 run decodes to, read from each of the four alignments: only decodings that are UTF-8 text count. */
function base64Texts(run: string): string[] {
  const texts: string[] = [];
  const body = run.replace(/=+$/u, '');
  const alphabet = body.includes('-') || body.includes('_') ? 'base64url' : 'base64';
  for (let offset = 0; offset < 4 && body.length - offset >= 12; offset++) {
    const aligned = body.slice(offset);
    let text: string;
    try {
      text = UTF8.decode(Buffer.from(aligned.slice(0, aligned.length - (aligned.length % 4 === 1 ? 1 : 0)), alphabet));
    } catch {
      continue;
    }
    // eslint-disable-next-line no-control-regex -- control characters mean binary, not text
    if (!/[\u0000-\u0008\u000e-\u001f\u007f]/u.test(text)) texts.push(text);
  }
  return texts;
}

/** The base64 runs of a text that decode to text holding a match: the whole run is the match, of the kind found inside. */
function base64Matches(text: string, kinds: readonly PiiKind[], context: PiiContext, depth: number): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const run of text.matchAll(BASE64_RUN)) {
    if (run[0].length > MAX_BASE64_RUN || /^\d+$/u.test(run[0])) continue;
    for (const decoded of base64Texts(run[0])) {
      const inside = findPiiIn(decoded, kinds, context, depth + 1);
      const kind = PII_PRECEDENCE.find((candidate) => inside.some((match) => match.kind === candidate));
      if (kind !== undefined) {
        matches.push({ kind, start: run.index, end: run.index + run[0].length });
        break;
      }
    }
  }
  return matches;
}

/** Every value holds a digit or an `@`, or is base64 long enough to hold one: text with none of these holds none. */
const MAY_HOLD_PII = /[\d@]|[A-Za-z0-9+/=_-]{12}/u;

function findPiiIn(text: string, kinds: readonly PiiKind[], context: PiiContext, depth: number): PiiMatch[] {
  const reading = piiReading(text);
  if (!MAY_HOLD_PII.test(reading.text)) return [];
  const candidates = depth < MAX_BASE64_DEPTH ? base64Matches(reading.text, kinds, context, depth) : [];
  const accepted: PiiMatch[] = [];
  for (const kind of PII_PRECEDENCE) {
    if (!kinds.includes(kind)) {
      continue;
    }
    for (const match of [...PII_FINDERS[kind](reading.text, context), ...candidates.filter((candidate) => candidate.kind === kind)]) {
      if (!accepted.some((other) => match.start < other.end && other.start < match.end)) {
        accepted.push(match);
      }
    }
  }
  return accepted
    .map((match) => ({ kind: match.kind, start: readingStart(reading, match.start), end: readingEnd(reading, match.end - 1) }))
    .sort((a, b) => a.start - b.start || a.end - b.end);
}

/**
 * Every PII match of the given kinds (all five by default), sorted by position, without overlaps:
 * where two matches overlap the more specific kind wins (IBAN, card, SSN, e-mail, phone), so the
 * digits of a card are not also reported as a phone number.
 *
 * The finders read the text as piiReading makes it (escapes decoded, invisible characters removed,
 * spaces and dashes made ASCII, NFKC), and base64 runs of 12 to 65,536 characters are decoded (from
 * each alignment, twice deep) and read too. A match's offsets are in the text as written, covering
 * everything it was written with: `text.slice(start, end)` is `dana&#64;example.com` entire, or the
 * whole base64 run.
 */
export function findPii(text: string, kinds: readonly PiiKind[] = PII_KINDS, context: PiiContext = {}): PiiMatch[] {
  return findPiiIn(text, kinds, context, 0);
}

// ---------------------------------------------------------------------------------------------
// The walk over the parameters
// ---------------------------------------------------------------------------------------------

const THREAT_CHECKS: Readonly<Record<Threat, (text: string) => boolean>> = {
  prompt_injection: isPromptInjection,
  sql_injection: isSqlInjection,
  path_traversal: isPathTraversal,
  pii: (text) => findPii(text).length > 0,
};

/** Joins a dotted parameter path: keys as written, array indexes as decimal numbers; the root is "". */
export function childPath(parent: string, key: string | number): string {
  return parent === '' ? String(key) : `${parent}.${String(key)}`;
}

class ScanBudgetExhausted extends Error {
  readonly path: string;

  constructor(path: string) {
    super(`scan budget exhausted at ${path}`);
    this.path = path;
  }
}

interface ScanState {
  readonly limits: ScanLimits;
  readonly found: Record<Threat, Set<string>>;
  strings: number;
  totalLength: number;
}

function tripAll(state: ScanState, path: string): void {
  for (const threat of THREATS) {
    state.found[threat].add(path);
  }
}

function scanString(state: ScanState, path: string, text: string, field?: string): void {
  state.strings++;
  state.totalLength += text.length;
  if (state.strings > state.limits.maxStrings || state.totalLength > state.limits.maxTotalLength) {
    throw new ScanBudgetExhausted(path);
  }
  if (text.length > state.limits.maxStringLength) {
    tripAll(state, path);
    return;
  }
  for (const threat of THREATS) {
    const found = threat === 'pii' ? findPii(text, PII_KINDS, field === undefined ? {} : { field }).length > 0 : THREAT_CHECKS[threat](text);
    if (found) {
      state.found[threat].add(path);
    }
  }
}

function scanValue(state: ScanState, path: string, value: unknown, depth: number, field?: string): void {
  if (typeof value === 'string') {
    scanString(state, path, value, field);
  } else if (typeof value === 'number' && Number.isSafeInteger(value)) {
    // An integer can carry a card number; it has no other threat to show.
    if (findPii(String(value), PII_KINDS, field === undefined ? {} : { field }).length > 0) {
      state.found.pii.add(path);
    }
  } else if (typeof value === 'object' && value !== null) {
    if (depth >= state.limits.maxDepth) {
      tripAll(state, path);
      return;
    }
    if (Array.isArray(value)) {
      value.forEach((item: unknown, index) => {
        scanValue(state, childPath(path, index), item, depth + 1);
      });
      return;
    }
    for (const key of Object.keys(value)) {
      const memberPath = childPath(path, key);
      scanString(state, memberPath, key);
      scanValue(state, memberPath, (value as Record<string, unknown>)[key], depth + 1, key);
    }
  }
}

/**
 * Runs every detector over every string in the parameters (object keys included: an injected key
 * is as dangerous as an injected value) and returns, per detector, the sorted dotted paths that
 * tripped it. A key's findings are reported at the path of its member. Integers are checked for
 * PII (a card number sent as a number). Never throws; see ScanLimits for what happens to input
 * past the bounds.
 */
export function detectThreats(params: unknown, limits: ScanLimits = DEFAULT_SCAN_LIMITS): Record<Threat, string[]> {
  const state: ScanState = {
    limits,
    found: { prompt_injection: new Set(), sql_injection: new Set(), path_traversal: new Set(), pii: new Set() },
    strings: 0,
    totalLength: 0,
  };
  try {
    scanValue(state, '', params, 0);
  } catch (error) {
    if (!(error instanceof ScanBudgetExhausted)) {
      throw error;
    }
    tripAll(state, error.path);
  }
  const sorted = (paths: Set<string>): string[] => [...paths].sort();
  return {
    prompt_injection: sorted(state.found.prompt_injection),
    sql_injection: sorted(state.found.sql_injection),
    path_traversal: sorted(state.found.path_traversal),
    pii: sorted(state.found.pii),
  };
}
