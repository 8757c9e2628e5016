import { describe, expect, it } from 'vitest';
import { CRDS } from './crds.ts';
import type { Schema } from './openapi.ts';
import { crdFileName, renderCrd } from './render.ts';

/** Every node of a schema with its dotted path. */
function* walk(schema: Schema, path: string): Generator<[string, Schema]> {
  yield [path, schema];
  for (const [key, child] of Object.entries(schema.properties ?? {})) yield* walk(child, `${path}.${key}`);
  if (schema.items) yield* walk(schema.items, `${path}[]`);
  if (typeof schema.additionalProperties === 'object') yield* walk(schema.additionalProperties, `${path}{}`);
}

const rendered = CRDS.map((source) => {
  const crd = renderCrd(source);
  const schema = crd.spec.versions[0]?.schema.openAPIV3Schema;
  if (!schema) throw new Error(`${source.kind} has no schema`);
  return { source, crd, schema };
});

describe('rendered CRDs', () => {
  it.each(rendered)('$source.kind bounds every string, list and map', ({ schema }) => {
    const unbounded: string[] = [];
    for (const [path, node] of walk(schema, '')) {
      if (path.startsWith('.metadata')) continue;
      if (node.type === 'string' && node.maxLength === undefined && node.enum === undefined) unbounded.push(`${path} (string)`);
      if (node.type === 'array' && node.maxItems === undefined) unbounded.push(`${path} (list)`);
      if (node.additionalProperties !== undefined && node.maxProperties === undefined) unbounded.push(`${path} (map)`);
    }
    expect(unbounded).toEqual([]);
  });

  it.each(rendered)('$source.kind describes every field', ({ schema }) => {
    const undescribed = [...walk(schema.properties?.spec ?? {}, '.spec')]
      .filter(([, node]) => !node.description)
      .map(([path]) => path);
    expect(undescribed).toEqual([]);
  });

  it.each(rendered)('$source.kind carries no generator-only keys', ({ crd }) => {
    const text = JSON.stringify(crd);
    expect(text).not.toContain('"title"');
    expect(text).not.toContain('"tsType"');
  });

  it.each(rendered)('$source.kind is namespaced, in the portcullis category, with a status subresource', ({ source, crd }) => {
    expect(crd.metadata.name).toBe(`${source.plural}.portcullis.dev`);
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.names.categories).toEqual(['portcullis']);
    expect(crd.spec.versions[0]?.subresources).toEqual({ status: {} });
    expect(crdFileName(source)).toBe(`portcullis.dev_${source.plural}.yaml`);
  });
});
