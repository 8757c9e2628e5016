// US dollars as whole micro-dollars, so sums are exact (0.1 + 0.2 is 0.3) and
// the same in memory, in Redis' Lua (doubles, exact up to 2^53) and in the
// policy, which compares the decimal text of the numbers it is given.

const MICROS_PER_DOLLAR = 1_000_000;
const DECIMAL = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/;

/**
 * Micro-dollars of a non-negative amount, from its decimal text (what the policy
 * reads), rounded up or down. Amounts past Number.MAX_SAFE_INTEGER micro-dollars
 * come back as that bound: more than any budget can hold.
 */
export function toMicros(dollars: number, rounding: 'up' | 'down'): number {
  if (!Number.isFinite(dollars) || dollars < 0) throw new RangeError(`not an amount of dollars: ${String(dollars)}`);
  const match = DECIMAL.exec(String(dollars));
  if (match === null) throw new RangeError(`not an amount of dollars: ${String(dollars)}`);
  const [, whole = '', fraction = '', exponent = '0'] = match;
  const digits = BigInt(whole + fraction);
  const scale = Number(exponent) - fraction.length + 6;
  let micros: bigint;
  if (scale >= 0) {
    micros = digits * 10n ** BigInt(scale);
  } else {
    const divisor = 10n ** BigInt(-scale);
    micros = digits / divisor;
    if (rounding === 'up' && micros * divisor !== digits) micros += 1n;
  }
  return micros > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(micros);
}

/** Dollars of whole micro-dollars: the nearest double, whose shortest text is the exact decimal. */
export function fromMicros(micros: number): number {
  return micros / MICROS_PER_DOLLAR;
}
