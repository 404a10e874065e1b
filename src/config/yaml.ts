import type * as Yaml from 'yaml';
import { bundled } from '../core/bundled.js';

/** The yaml package, from its bundle (core/bundled.ts): what the config loader, AsyncAPI documents and steps read YAML with. */
const yaml = bundled<typeof Yaml>('yaml');

export const { Document, LineCounter, parseDocument, parse, stringify, isAlias, isMap, isPair, isScalar, isSeq, visit } = yaml;
export type LineCounter = Yaml.LineCounter;
export type Document = Yaml.Document;
export type { Node, Scalar } from 'yaml';
