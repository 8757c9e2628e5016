// Bundle revisions: `<sequence>-<digest>`, ordered by sequence.
//
// The sequence is a non-negative decimal integer (no leading zeros, at most MAX_REVISION_SEQUENCE)
// that the operator raises whenever a tenant's bundle content changes; the digest is the lower-case hex
// SHA-256 prefix (16 to 64 characters) of that content, so two revisions with one sequence but
// different content are told apart. A sidecar only moves to a revision whose sequence is higher
// than the one it runs, or to the very same revision (a re-read of the same ConfigMap).
import { createHash } from 'node:crypto';
import { BundleRevisionInvalidError } from './errors.ts';

const REVISION = /^(0|[1-9][0-9]{0,15})-([0-9a-f]{16,64})$/u;

/**
 * The highest sequence a revision may carry: 2^53 - 1, exact as a JSON number and a metric
 * value. One bundle a millisecond would take 285,000 years to reach it, so a revision beyond it
 * cannot have been numbered by the operator and is refused, never adopted or counted from.
 */
export const MAX_REVISION_SEQUENCE = BigInt(Number.MAX_SAFE_INTEGER);

/** How many hex characters of the content digest a revision carries. */
export const REVISION_DIGEST_LENGTH = 16;

export interface ParsedRevision {
  sequence: bigint;
  digest: string;
}

export function parseRevision(revision: string): ParsedRevision {
  const match = REVISION.exec(revision);
  if (match?.[1] === undefined || match[2] === undefined) {
    throw new BundleRevisionInvalidError(
      `revision ${JSON.stringify(revision)} is not <sequence>-<digest> (a decimal number, a dash, 16 to 64 lower-case hex digits)`,
    );
  }
  const sequence = BigInt(match[1]);
  if (sequence > MAX_REVISION_SEQUENCE) {
    throw new BundleRevisionInvalidError(`revision ${JSON.stringify(revision)} has a sequence above ${MAX_REVISION_SEQUENCE.toString()}, which no bundle can reach`);
  }
  return { sequence, digest: match[2] };
}

export function formatRevision(sequence: bigint | number, contentDigest: string): string {
  const digest = contentDigest.slice(0, REVISION_DIGEST_LENGTH);
  const revision = `${BigInt(sequence).toString()}-${digest}`;
  parseRevision(revision);
  return revision;
}

/** Orders revisions by sequence; equal sequences compare by digest so the order is total. */
export function compareRevisions(a: string, b: string): number {
  const left = parseRevision(a);
  const right = parseRevision(b);
  if (left.sequence !== right.sequence) {
    return left.sequence < right.sequence ? -1 : 1;
  }
  if (left.digest === right.digest) {
    return 0;
  }
  return left.digest < right.digest ? -1 : 1;
}

/**
 * The revision to give content whose digest is `contentDigest`, after `previous` (undefined for a
 * tenant's first bundle): the previous revision again when the content did not change (so an
 * unchanged tenant rewrites identical bytes), else the next sequence.
 */
export function nextRevision(previous: string | undefined, contentDigest: string): string {
  if (previous === undefined) {
    return formatRevision(1n, contentDigest);
  }
  const { sequence, digest } = parseRevision(previous);
  if (contentDigest.startsWith(digest)) {
    return previous;
  }
  if (sequence === MAX_REVISION_SEQUENCE) {
    throw new BundleRevisionInvalidError(`revision ${previous} has the highest sequence a revision may carry; no later revision exists`);
  }
  return formatRevision(sequence + 1n, contentDigest);
}

/** The key of the minimum-revision ConfigMap that holds the revision. */
export const MINIMUM_REVISION_KEY = 'revision';

/**
 * The ConfigMap, in the operator's namespace, holding the lowest revision a sidecar of `tenant`
 * loads when it starts: an older genuine bundle replayed into the tenant namespace is refused
 * even by a sidecar that has no revision of its own to compare with yet. Named by a digest of
 * the tenant, since a tenant label may hold characters a ConfigMap name may not.
 */
export function minimumRevisionConfigMap(tenant: string): string {
  return `${MINIMUM_REVISION_PREFIX}${sha256Hex(tenant).slice(0, 16)}`;
}

export const MINIMUM_REVISION_PREFIX = 'portcullis-min-revision-';

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}
