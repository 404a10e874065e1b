import type { Ajv, Options } from 'ajv';
import type { Ajv2019 } from 'ajv/dist/2019.js';
import type { Ajv2020 } from 'ajv/dist/2020.js';
import type { fullFormats } from 'ajv-formats/dist/formats.js';
import { bundled } from './bundled.js';

/** ajv's draft classes and ajv-formats, as the gateway uses them. */
export interface AjvModules {
  Ajv: typeof Ajv;
  /** The ajv team's class for JSON Schema draft-04 (boolean `exclusiveMaximum`, `id`), on ajv's core. */
  AjvDraft04: new (
    opts?: Options,
  ) => Ajv;
  Ajv2019: typeof Ajv2019;
  Ajv2020: typeof Ajv2020;
  addFormats: (ajv: Ajv) => Ajv;
  fullFormats: typeof fullFormats;
}

let loaded: AjvModules | undefined;

/**
 * Loaded on first use (a config without a JSON Schema never needs ajv), from one bundle
 * (scripts/bundle-vendor.js): ajv-formats must share ajv's one copy of its code generator.
 */
export function ajvModules(): AjvModules {
  loaded ??= bundled<AjvModules>('ajv', (require) => ({
    Ajv: (require('ajv') as { Ajv: typeof Ajv }).Ajv,
    AjvDraft04: (require('ajv-draft-04') as { default: new (opts?: Options) => Ajv }).default,
    Ajv2019: (require('ajv/dist/2019.js') as { Ajv2019: typeof Ajv2019 }).Ajv2019,
    Ajv2020: (require('ajv/dist/2020.js') as { Ajv2020: typeof Ajv2020 }).Ajv2020,
    addFormats: require('ajv-formats') as (ajv: Ajv) => Ajv,
    fullFormats: (require('ajv-formats/dist/formats.js') as { fullFormats: typeof fullFormats }).fullFormats,
  }));
  return loaded;
}
