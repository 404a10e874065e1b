import type { Ajv } from 'ajv';
import type { PathPart } from '../config/source.js';
import { didYouMean } from '../config/suggest.js';

/**
 * ajv (with `strict: false`, which user schemas need for AsyncAPI's and OpenAPI's extra keywords)
 * ignores a `format` it does not know and any keyword it does not know: `format: emial` or
 * `requird: [id]` would check nothing while the config validates. Both are found here, before
 * compiling, with the path of the offending key so the diagnostic points at it.
 */

/** Keywords whose value is a map of name to schema. */
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas']);
/** Keywords whose value is one schema, or a list of schemas (`items` in draft-07). */
const SCHEMA_VALUES = new Set([
  'items',
  'additionalItems',
  'contains',
  'not',
  'if',
  'then',
  'else',
  'additionalProperties',
  'propertyNames',
  'unevaluatedItems',
  'unevaluatedProperties',
  'prefixItems',
  'allOf',
  'anyOf',
  'oneOf',
]);

/**
 * Annotations ajv does not know that schemas written for AsyncAPI or OpenAPI carry (AsyncAPI's
 * Schema Object adds them to JSON Schema); they check nothing there either. `x-*` keys are
 * extensions and pass too.
 */
const FOREIGN_ANNOTATIONS = new Set(['example', 'externalDocs', 'discriminator']);

/**
 * Formats JSON Schema defines that ajv-formats does not implement: a schema may name them, and
 * they check nothing (as JSON Schema lets an implementation do), so they are not typos.
 */
const UNCHECKED_FORMATS = new Set(['idn-email', 'idn-hostname', 'iri', 'iri-reference']);

export interface SchemaTypo {
  path: PathPart[];
  message: string;
}

export function schemaTypos(schema: unknown, ajv: Ajv): SchemaTypo[] {
  const keywords = Object.keys(ajv.RULES.keywords);
  const formats = Object.keys(ajv.formats);
  const out: SchemaTypo[] = [];
  const walk = (s: unknown, path: PathPart[]): void => {
    if (typeof s !== 'object' || s === null || Array.isArray(s)) return;
    for (const [key, value] of Object.entries(s)) {
      const at = [...path, key];
      if (key === 'format' && typeof value === 'string' && !formats.includes(value) && !UNCHECKED_FORMATS.has(value)) {
        out.push({ path: at, message: `unknown format '${value}'${didYouMean(value, formats)}; known formats: ${formats.join(', ')}` });
      } else if (!(key in ajv.RULES.keywords) && !key.startsWith('x-') && !FOREIGN_ANNOTATIONS.has(key)) {
        out.push({ path: at, message: `unknown keyword '${key}'${didYouMean(key, keywords)}; ajv would ignore it and check nothing (an extension is written 'x-...')` });
      } else if (SCHEMA_MAPS.has(key) && typeof value === 'object' && value !== null) {
        for (const [name, sub] of Object.entries(value)) walk(sub, [...at, name]);
      } else if (SCHEMA_VALUES.has(key)) {
        if (Array.isArray(value)) value.forEach((sub, i) => walk(sub, [...at, i]));
        else walk(value, at);
      } else if (key === 'dependencies' && typeof value === 'object' && value !== null) {
        for (const [name, sub] of Object.entries(value)) if (!Array.isArray(sub)) walk(sub, [...at, name]);
      }
    }
  };
  walk(schema, []);
  return out;
}
