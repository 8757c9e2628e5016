#!/usr/bin/env node
// In a checkout the TypeScript sources run as they are (Node strips their
// types), so no stale build can ever answer; the published package and the
// image hold no sources, only the JavaScript `npm run build` writes to dist/
// (Node refuses to strip types under node_modules).
import { existsSync } from 'node:fs';
import { URL } from 'node:url';

const sources = new URL('../src/cli/main.ts', import.meta.url);
await import(existsSync(sources) ? sources.href : new URL('../dist/cli/main.js', import.meta.url).href);
