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
 * US Social Security numbers written `AAA-GG-SSSS` or `AAA GG SSSS` (one separator style), or nine
 * bare digits right after a label (`SSN`, `SSN:`, `SS#`, `social security number`). Numbers that
 * were never issued are not flagged: area 000, 666 or 900–999, group 00, serial 0000.
 * Nine bare digits without a label are not flagged (too many order and account ids look alike).
 */
export function findSsns(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const match of text.matchAll(/(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])/gu)) {
    if (isIssuableSsn(match[1] ?? '', match[3] ?? '', match[4] ?? '')) {
      matches.push({ kind: 'ssn', start: match.index, end: match.index + match[0].length });
    }
  }
  for (const match of text.matchAll(/\b(?:ssn|ss#|social security(?: number| no\.?)?)\W{0,3}(\d{9})(?!\d)/giu)) {
    const digits = match[1] ?? '';
    if (isIssuableSsn(digits.slice(0, 3), digits.slice(3, 5), digits.slice(5))) {
      const end = match.index + match[0].length;
      matches.push({ kind: 'ssn', start: end - digits.length, end });
    }
  }
  return matches;
}

function isIssuableSsn(area: string, group: string, serial: string): boolean {
  return area !== '000' && area !== '666' && !area.startsWith('9') && group !== '00' && serial !== '0000';
}

const EMAIL_LOCAL_CHAR = /[A-Za-z0-9._%+-]/u;
const EMAIL_DOMAIN_CHAR = /[A-Za-z0-9.-]/u;

/**
 * E-mail addresses: `local@domain.tld`, the domain made of dot-separated labels of letters, digits
 * and hyphens, ending in a top-level domain of two or more letters. Found by scanning out from each
 * `@` (linear in the text, no backtracking); leading and trailing dots are not part of the match.
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
  while (start > notBefore && EMAIL_LOCAL_CHAR.test(text.charAt(start - 1))) {
    start--;
  }
  while (text.charAt(start) === '.' && start < at) {
    start++;
  }
  let end = at + 1;
  while (end < text.length && EMAIL_DOMAIN_CHAR.test(text.charAt(end))) {
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

/**
 * Payment card numbers: 13 to 19 digits, optionally grouped by single spaces or single dashes (one
 * style per number), not part of a longer run of digits, passing the Luhn check, and not one digit
 * repeated (`0000 0000 0000 0000` passes Luhn but is no card).
 */
export function findCardNumbers(text: string): PiiMatch[] {
  const matches: PiiMatch[] = [];
  for (const match of text.matchAll(/(?<![\d-])\d(?:([ -]?)\d){12,18}(?![\d])(?!-\d)/gu)) {
    const written = match[0];
    const separators = new Set(written.replace(/\d/gu, ''));
    const digits = written.replace(/\D/gu, '');
    if (separators.size <= 1 && luhnValid(digits) && !/^(\d)\1*$/u.test(digits)) {
      matches.push({ kind: 'credit_card', start: match.index, end: match.index + written.length });
    }
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

const PII_FINDERS: Readonly<Record<PiiKind, (text: string) => PiiMatch[]>> = {
  iban: findIbans,
  credit_card: findCardNumbers,
  ssn: findSsns,
  email: findEmails,
  phone: findPhoneNumbers,
};

/** When matches of two kinds overlap, the earlier kind here wins (it is the more specific check). */
const PII_PRECEDENCE: readonly PiiKind[] = ['iban', 'credit_card', 'ssn', 'email', 'phone'];

/**
 * Every PII match of the given kinds (all five by default), sorted by position, without overlaps:
 * where two matches overlap the more specific kind wins (IBAN, card, SSN, e-mail, phone), so the
 * digits of a card are not also reported as a phone number.
 */
export function findPii(text: string, kinds: readonly PiiKind[] = PII_KINDS): PiiMatch[] {
  const accepted: PiiMatch[] = [];
  for (const kind of PII_PRECEDENCE) {
    if (!kinds.includes(kind)) {
      continue;
    }
    for (const match of PII_FINDERS[kind](text)) {
      if (!accepted.some((other) => match.start < other.end && other.start < match.end)) {
        accepted.push(match);
      }
    }
  }
  return accepted.sort((a, b) => a.start - b.start || a.end - b.end);
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

function scanString(state: ScanState, path: string, text: string): void {
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
    if (THREAT_CHECKS[threat](text)) {
      state.found[threat].add(path);
    }
  }
}

function scanValue(state: ScanState, path: string, value: unknown, depth: number): void {
  if (typeof value === 'string') {
    scanString(state, path, value);
  } else if (typeof value === 'number' && Number.isSafeInteger(value)) {
    // An integer can carry a card number; it has no other threat to show.
    if (findPii(String(value)).length > 0) {
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
      scanValue(state, memberPath, (value as Record<string, unknown>)[key], depth + 1);
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
