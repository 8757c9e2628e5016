// What the sidecar process loads, read from the sources: every import that
// survives type stripping (`import type` and `export type` do not), static or
// dynamic, followed through the project's own modules. The sidecar runs in
// every agent pod, so what it loads is memory paid once per pod.
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..', '..');
const ENTRY = 'src/sidecar/main.ts';

interface Imports {
  /** Loaded when the module is. */
  static: string[];
  /** Loaded by an import() the module may or may not run. */
  dynamic: string[];
}

/** The runtime imports of one module: project paths (relative to the root) and package names. */
function importsOf(path: string): Imports {
  const source = ts.createSourceFile(path, readFileSync(join(ROOT, path), 'utf8'), ts.ScriptTarget.Latest, true);
  const found: Imports = { static: [], dynamic: [] };
  const target = (specifier: string): string => {
    if (specifier.startsWith('.')) return relative(ROOT, resolve(ROOT, dirname(path), specifier));
    if (specifier.startsWith('node:')) return specifier;
    const parts = specifier.split('/');
    return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier) && node.importClause?.phaseModifier !== ts.SyntaxKind.TypeKeyword) found.static.push(target(node.moduleSpecifier.text));
    if (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier) && !node.isTypeOnly) found.static.push(target(node.moduleSpecifier.text));
    if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [argument] = node.arguments;
      if (argument === undefined || !ts.isStringLiteral(argument)) throw new Error(`${path}: an import() of a computed specifier cannot be followed`);
      found.dynamic.push(target(argument.text));
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** Every project module and package reachable from `entry`, each with the module that first imported it. */
function graphOf(entry: string, follow: { dynamic: boolean }): Map<string, string | undefined> {
  const reached = new Map<string, string | undefined>([[entry, undefined]]);
  const queue = [entry];
  for (let path = queue.shift(); path !== undefined; path = queue.shift()) {
    const imports = importsOf(path);
    for (const next of follow.dynamic ? [...imports.static, ...imports.dynamic] : imports.static) {
      if (reached.has(next)) continue;
      reached.set(next, path);
      if (next.startsWith('src/')) queue.push(next);
    }
  }
  return reached;
}

/** The import chain from the entry to `target`. */
function chainTo(graph: Map<string, string | undefined>, target: string): string {
  const chain: string[] = [];
  for (let at: string | undefined = target; at !== undefined; at = graph.get(at)) chain.unshift(at);
  return chain.join(' -> ');
}

/** The project modules of the graph that import `name` themselves. */
function importersOf(graph: Map<string, string | undefined>, name: string, follow: { dynamic: boolean }): string[] {
  return [...graph.keys()].filter((path) => path.startsWith('src/')).filter((path) => {
    const imports = importsOf(path);
    return (follow.dynamic ? [...imports.static, ...imports.dynamic] : imports.static).includes(name);
  }).sort();
}

describe("the sidecar's module graph", () => {
  const everything = graphOf(ENTRY, { dynamic: true });
  const atStart = graphOf(ENTRY, { dynamic: false });

  it('is read from the sources: the sidecar, its transports and its API client are in it', () => {
    for (const module of ['src/sidecar/sidecar.ts', 'src/sidecar/grpc-server.ts', 'src/sidecar/kube-client.ts', 'src/sidecar/configmap-watch.ts', '@grpc/grpc-js', 'yaml']) expect(atStart.has(module)).toBe(true);
  });

  it('loads the OpenTelemetry SDK only when tracing is configured', () => {
    const sdk = ['@opentelemetry/sdk-trace', '@opentelemetry/exporter-trace-otlp-proto', '@opentelemetry/exporter-trace-otlp-http'];
    expect(sdk.filter((name) => everything.has(name))).toEqual(sdk);
    expect(sdk.filter((name) => atStart.has(name)).map((name) => chainTo(atStart, name))).toEqual([]);
  });

  it('never loads @kubernetes/client-node', () => {
    const importers = importersOf(everything, '@kubernetes/client-node', { dynamic: true });
    expect(importers, importers.map((path) => chainTo(everything, path)).join('\n')).toEqual([]);
  });
});
