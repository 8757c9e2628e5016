import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { normalPath, queryParams, TargetRefusal } from './request-target.ts';
import type { ToolTable } from './tools.ts';
import { matchRoute, toolTable } from './tools.ts';

describe('normalPath', () => {
  it.each([
    ['a plain path', '/files/a', '/files/a'],
    ['percent-encoded letters and digits, decoded once', '/fil%65s/%41%31', '/files/A1'],
    ['an encoded space and UTF-8', '/files/a%20b/%C3%A9', '/files/a b/é'],
    ['a trailing slash, kept', '/files/', '/files/'],
    ['the root', '/', '/'],
    ['sub-delimiters RFC 3986 allows in a segment', "/a!$&'()*+,=:@b", "/a!$&'()*+,=:@b"],
    ['a percent sign written as %25 before text that is not hex', '/50%25off', '/50%off'],
  ])('reads %s', (_name, raw, normal) => {
    expect(normalPath(raw)).toBe(normal);
  });

  it.each([
    ['a relative path', 'files/a', /not absolute/],
    ['..; (Tomcat and Spring strip the parameter, then resolve ..)', '/files/..;/admin', /";"/],
    ['a path parameter', '/mcp;x', /";"/],
    ['an encoded ;', '/mcp%3bx', /encoded ";"/],
    ['a backslash', '/files/..\\admin', /backslash/],
    ['an encoded backslash', '/files/..%5cadmin', /encoded backslash/],
    ['an encoded slash', '/files/..%2Fadmin', /encoded slash/],
    ['a dot segment', '/files/../admin', /dot segment/],
    ['a single dot segment', '/files/./a', /dot segment/],
    ['an encoded dot segment', '/files/%2e%2E/admin', /dot segment/],
    ['a dot segment half encoded', '/files/.%2e/admin', /dot segment/],
    ['double encoding', '/files/%252e%252e%252fadmin', /encoded twice/],
    ['double encoding of a letter', '/%2561dmin', /encoded twice/],
    ['overlong UTF-8 for a dot', '/files/%c0%ae%c0%ae/admin', /overlong/],
    ['overlong UTF-8 for a slash', '/files/..%c0%afadmin', /overlong/],
    ['a lone continuation byte', '/files/%80', /UTF-8/],
    ['a %u escape', '/files/%u002e%u002e/admin', /%u escape/],
    ['a % without two hex digits', '/files/%4', /not followed by two hex digits/],
    ['an empty segment', '/files//admin', /empty segment/],
    ['a raw space', '/files/a b', /U\+0020/],
    ['raw UTF-8', '/files/é', /U\+00E9/],
    ['an encoded NUL', '/files/a%00', /control character/],
    ['an encoded ?', '/files/a%3fb', /"\?"/],
    ['fullwidth dots, which NFKC makes ..', '/files/%EF%BC%8E%EF%BC%8E/admin', /NFKC/],
    ['a fragment', '/files/a#x', /"#"/],
  ])('refuses %s, saying what is wrong', (_name, raw, reason) => {
    expect(() => normalPath(raw)).toThrow(TargetRefusal);
    expect(() => normalPath(raw)).toThrow(reason);
  });
});

describe('queryParams', () => {
  it.each([
    ['nothing', '', {}],
    ['pairs separated by &', 'a=1&b=two', { a: '1', b: 'two' }],
    ['a name without a value, as an empty string', 'flag', { flag: '' }],
    ['percent-encoded names and values, decoded once', '%61=%2B%20x%26y%3D', { a: '+ x&y=' }],
    ['names in camel case, with _, - and $', 'pageSize=1&per_page=2&api-version=3&$filter=x', { pageSize: '1', per_page: '2', 'api-version': '3', $filter: 'x' }],
    ['a value holding / and ?', 'next=/a?b', { next: '/a?b' }],
  ])('reads %s', (_name, query, params) => {
    expect(queryParams(query)).toEqual(params);
  });

  it('keeps a __proto__ parameter a parameter', () => {
    const params = queryParams('__proto__=x');
    expect(Object.keys(params)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(params)).toBe(Object.prototype);
  });

  it.each([
    ['a ; separator', 'name=secret;name=x', /";"/],
    ['a repeated name', 'name=secret&name=x', /name is repeated/],
    ['a name encoded into another', 'name=x&n%61me=secret', /name is repeated/],
    ['names that differ only in case', 'Name=secret&name=x', /Name and name differ only in letter case/],
    ['names that differ only by the Kelvin sign', 'k=1&%E2%84%AA=2', /differ only in letter case|not a plain name/],
    ['a bracketed name', 'name[]=secret', /bracket/],
    ['an encoded bracketed name', 'name%5Bx%5D=secret', /bracketed/],
    ['a dotted name', 'user.name=x', /dot/],
    ['a raw +', 'q=a+b', /%20 or %2B/],
    ['an empty pair', 'a=1&&b=2', /empty parameter/],
    ['a nameless pair', '=x', /without a name/],
    ['a %u escape', 'a=%u0041', /%u escape/],
    ['overlong UTF-8', 'a=%c0%ae', /UTF-8/],
    ['a control character in a value', 'a=%0d%0aX: y', /U\+0020|control character/],
  ])('refuses %s, saying what is wrong', (_name, query, reason) => {
    expect(() => queryParams(query)).toThrow(TargetRefusal);
    expect(() => queryParams(query)).toThrow(reason);
  });
});

/**
 * The property: however a path is written, it maps to the route its plain
 * form maps to, or it is refused; never to another route. Encodings (percent,
 * double, overlong, %u, backslash, ; parameters, dot segments) say the same
 * path in other bytes and must hold it always; letter case and a trailing
 * slash make another path, which a lenient server may still route alike, so
 * they must hold it whenever the plain form maps.
 */
describe('no written form of a path maps to a route its plain form does not', () => {
  const HOST = 'h.tools.svc';
  const table: ToolTable = toolTable([
    {
      name: 'files',
      http: {
        host: HOST,
        actions: [
          { name: 'read', method: 'GET', path: '/files/*' },
          { name: 'read-secret', method: 'GET', path: '/files/secret' },
          { name: 'admin', method: 'GET', path: '/admin/*' },
          { name: 'remove', method: 'DELETE', path: '/files/*' },
          { name: 'upload', method: 'POST', path: '/files/*' },
        ],
      },
    },
    { name: 'agent-mcp', mcp: { host: HOST, path: '/mcp' } },
  ]);

  const REFUSED = 'refused';
  function routeOf(method: string, raw: string): string {
    let path: string;
    try {
      path = normalPath(raw);
    } catch (error) {
      if (error instanceof TargetRefusal) return REFUSED;
      throw error;
    }
    const match = matchRoute(table, { host: HOST, port: 80, method, path });
    if (match.kind === 'tool') return `${match.tool}/${match.action ?? ''}`;
    if (match.kind === 'mcp') return `mcp:${match.tool}`;
    return REFUSED;
  }

  const hex = (code: number, upper: boolean): string => {
    const digits = code.toString(16).padStart(2, '0');
    return `%${upper ? digits.toUpperCase() : digits}`;
  };

  /** Ways to write the same path in other bytes; each takes the plain path and a position to act at. */
  const ENCODINGS: Record<string, (path: string, at: number, upper: boolean) => string> = {
    'percent-encoding of one character': (path, at, upper) => `${path.slice(0, at)}${hex(path.charCodeAt(at), upper)}${path.slice(at + 1)}`,
    'double percent-encoding of one character': (path, at, upper) => `${path.slice(0, at)}%25${hex(path.charCodeAt(at), upper).slice(1)}${path.slice(at + 1)}`,
    'overlong UTF-8 of one character': (path, at, upper) => {
      const code = path.charCodeAt(at);
      return `${path.slice(0, at)}${hex(0xc0 | (code >> 6), upper)}${hex(0x80 | (code & 0x3f), upper)}${path.slice(at + 1)}`;
    },
    '%u encoding of one character': (path, at) => `${path.slice(0, at)}%u00${path.charCodeAt(at).toString(16).padStart(2, '0')}${path.slice(at + 1)}`,
    'a backslash for a slash': (path, at) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}\\${path.slice(slash + 1)}`;
    },
    'an encoded backslash for a slash': (path, at, upper) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}${upper ? '%5C' : '%5c'}${path.slice(slash + 1)}`;
    },
    'a ; parameter after a segment': (path, at) => {
      const end = path.indexOf('/', at + 1);
      return end < 0 ? `${path};x` : `${path.slice(0, end)};x${path.slice(end)}`;
    },
    'a ..; segment': (path, at) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}/x/..;${path.slice(slash)}`;
    },
    'a dot segment': (path, at) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}/.${path.slice(slash)}`;
    },
    'a dot-dot segment undoing one': (path, at) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}/x/..${path.slice(slash)}`;
    },
    'an encoded dot-dot segment': (path, at, upper) => {
      const slash = path.lastIndexOf('/', at);
      return `${path.slice(0, slash)}/x/${upper ? '%2E%2E' : '%2e%2e'}${path.slice(slash)}`;
    },
  };

  /** Ways to write another path a lenient server may route alike. */
  const LENIENT: Record<string, (path: string, at: number) => string> = {
    'another letter case of one character': (path, at) => {
      const char = path.charAt(at);
      const other = char === char.toUpperCase() ? char.toLowerCase() : char.toUpperCase();
      return `${path.slice(0, at)}${other}${path.slice(at + 1)}`;
    },
    'every letter in upper case': (path) => path.toUpperCase(),
    'a trailing slash': (path) => (path.endsWith('/') ? path.slice(0, -1) : `${path}/`),
  };

  const segment = fc.constantFrom('files', 'admin', 'secret', 'mcp', 'a', 'Secret', 'x.json', 'MCP');
  const plainPath = fc.array(segment, { minLength: 1, maxLength: 4 }).map((segments) => `/${segments.join('/')}`);
  const method = fc.constantFrom('GET', 'POST', 'DELETE');

  it.each(Object.keys(ENCODINGS))('%s', (name) => {
    const encode = ENCODINGS[name];
    if (encode === undefined) throw new Error(name);
    fc.assert(fc.property(plainPath, method, fc.nat(), fc.boolean(), (path, verb, position, upper) => {
      const at = 1 + (position % (path.length - 1));
      const written = encode(path, at, upper);
      const route = routeOf(verb, written);
      expect([routeOf(verb, path), REFUSED], `${verb} ${written}`).toContain(route);
    }), { numRuns: 400 });
  });

  it.each(Object.keys(LENIENT))('%s', (name) => {
    const vary = LENIENT[name];
    if (vary === undefined) throw new Error(name);
    fc.assert(fc.property(plainPath, method, fc.nat(), (path, verb, position) => {
      const plain = routeOf(verb, path);
      fc.pre(plain !== REFUSED);
      const written = vary(path, 1 + (position % (path.length - 1)));
      expect([plain, REFUSED], `${verb} ${written}`).toContain(routeOf(verb, written));
    }), { numRuns: 400 });
  });

  it('finds the routes it compares: plain paths map to each declared route', () => {
    expect(['/files/a', '/files/secret', '/admin/a', '/mcp'].map((path) => routeOf(path === '/mcp' ? 'POST' : 'GET', path))).toEqual(['files/read', 'files/read-secret', 'files/admin', 'mcp:agent-mcp']);
  });
});
