#!/usr/bin/env node
// Writes the AsyncAPI schemas' validators that @asyncapi/parser's document-structure rules use,
// as ajv standalone code (see src/asyncapi/structure-validators.ts); skipped when up to date.
import { writeStructureValidators } from '../dist/src/asyncapi/structure-validators.js';

const { written, dir } = await writeStructureValidators();
if (written) console.log(`AsyncAPI structure validators written to ${dir}`);
