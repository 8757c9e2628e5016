// Builders for the structural OpenAPI v3 schemas of our CRDs. Every string,
// list and map gets a bound through these helpers, so the API server can
// estimate the cost of each CEL rule and no field is unbounded by accident.

export interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

export interface Schema {
  /** Names the generated TypeScript interface; not written to the CRD. */
  title?: string;
  /** The TypeScript type of a node the schema cannot express; not written to the CRD. */
  tsType?: string;
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  enum?: (string | number)[];
  default?: unknown;
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  'x-kubernetes-validations'?: CelRule[];
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-embedded-resource'?: boolean;
}

type Extra = Omit<Schema, 'type' | 'description'>;

/** Gives a schema a name for its generated TypeScript interface. */
export function titled(title: string, schema: Schema): Schema {
  return { title, ...schema };
}

export function str(description: string, extra: Extra & { maxLength: number }): Schema {
  return { type: 'string', description, ...extra };
}

export function enumOf(description: string, values: readonly string[], extra: Extra = {}): Schema {
  return { type: 'string', description, enum: [...values], ...extra };
}

export function int(description: string, extra: Extra = {}): Schema {
  return { type: 'integer', description, ...extra };
}

export function num(description: string, extra: Extra = {}): Schema {
  return { type: 'number', description, ...extra };
}

export function bool(description: string, extra: Extra = {}): Schema {
  return { type: 'boolean', description, ...extra };
}

export function list(description: string, items: Schema, extra: Extra & { maxItems: number }): Schema {
  return { type: 'array', description, items, ...extra };
}

/** A list whose items are unique by `key`: the API server itself rejects duplicates. */
export function listMap(description: string, items: Schema, key: string, extra: Extra & { maxItems: number }): Schema {
  return {
    type: 'array',
    description,
    items,
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': [key],
    ...extra,
  };
}

export function obj(
  description: string,
  properties: Record<string, Schema>,
  extra: Extra = {},
): Schema {
  return { type: 'object', description, properties, ...extra };
}

export function stringMap(description: string, value: Schema, extra: Extra & { maxProperties: number }): Schema {
  return { type: 'object', description, additionalProperties: value, ...extra };
}

/** A scalar of any JSON type (string, number, boolean), as written by the user. */
export function anyScalar(description: string): Schema {
  return {
    description,
    tsType: 'string | number | boolean',
    'x-kubernetes-preserve-unknown-fields': true,
  };
}

export function cel(rule: string, message: string, extra: Omit<CelRule, 'rule' | 'message'> = {}): CelRule {
  return { rule, message, ...extra };
}
