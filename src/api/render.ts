// Turns the CRD sources in crds.ts into CustomResourceDefinition objects.
// Pure: no files, so the generator and the drift check share it.

import type { CrdSource, CrdSourceColumn } from './crds.ts';
import { API_VERSION, CATEGORY, GROUP, VERSION } from './crds.ts';
import type { Schema } from './openapi.ts';

export interface CustomResourceDefinition {
  apiVersion: 'apiextensions.k8s.io/v1';
  kind: 'CustomResourceDefinition';
  metadata: { name: string; labels: Record<string, string> };
  spec: {
    group: string;
    names: { kind: string; listKind: string; plural: string; singular: string; shortNames: string[]; categories: string[] };
    scope: 'Namespaced';
    versions: {
      name: string;
      served: boolean;
      storage: boolean;
      subresources: { status: Record<string, never> };
      additionalPrinterColumns: CrdSourceColumn[];
      schema: { openAPIV3Schema: Schema };
    }[];
  };
}

/** Drops what only the TypeScript generator reads (titles, tsType). */
export function stripTitles(schema: Schema): Schema {
  const { title: _title, tsType: _tsType, ...rest } = schema;
  const out: Schema = { ...rest };
  if (rest.properties) {
    out.properties = Object.fromEntries(Object.entries(rest.properties).map(([k, v]) => [k, stripTitles(v)]));
  }
  if (rest.items) out.items = stripTitles(rest.items);
  if (typeof rest.additionalProperties === 'object') out.additionalProperties = stripTitles(rest.additionalProperties);
  return out;
}

/** The whole object schema of a kind: apiVersion, kind, metadata, spec, status. */
export function objectSchema(source: CrdSource): Schema {
  return {
    title: source.kind,
    type: 'object',
    description: source.description,
    properties: {
      apiVersion: { type: 'string', description: API_VERSION, maxLength: 64 },
      kind: { type: 'string', description: source.kind, maxLength: 64 },
      metadata: { type: 'object', tsType: 'V1ObjectMeta' },
      spec: source.spec,
      status: source.status,
    },
    required: ['spec'],
  };
}

export function renderCrd(source: CrdSource): CustomResourceDefinition {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${source.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/part-of': 'portcullis' },
    },
    spec: {
      group: GROUP,
      names: {
        kind: source.kind,
        listKind: `${source.kind}List`,
        plural: source.plural,
        singular: source.singular,
        shortNames: source.shortNames,
        categories: [CATEGORY],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: source.printerColumns,
          schema: { openAPIV3Schema: stripTitles(objectSchema(source)) },
        },
      ],
    },
  };
}

/** File name in crds/, in kubebuilder's GROUP_PLURAL.yaml convention. */
export function crdFileName(source: CrdSource): string {
  return `${GROUP}_${source.plural}.yaml`;
}
