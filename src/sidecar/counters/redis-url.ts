// The Redis URL counters are kept at, as the sidecar's --redis-url and the
// operator's --counters-redis-url take it. Pure, so the operator checks it
// without loading the Redis client.

/**
 * Checks a --redis-url: redis:// or rediss:// with a host, and no credentials.
 * A user or password in the URL (or in its query, which the client also reads
 * options from) would stand in the pod's spec for anyone who can read the pod.
 */
export function checkRedisUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`${JSON.stringify(url)} is not a URL (expected redis://host:port)`);
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') throw new Error(`${JSON.stringify(url)} is not a redis:// or rediss:// URL`);
  if (parsed.hostname === '') throw new Error(`${JSON.stringify(url)} names no host`);
  // Quoted without what could be a password.
  const shown = `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
  if (parsed.username !== '' || parsed.password !== '') throw new Error(`the Redis URL ${shown} carries credentials: give the password in --redis-password-file (the user is the agent's own)`);
  if (parsed.search !== '' || parsed.hash !== '') throw new Error(`the Redis URL ${shown} has a query or fragment: give only redis://host:port[/db]`);
  return url;
}
