#!/usr/bin/env node
// Compiles the config schema's validator once, at build time (see src/config/precompiled-validator.ts).
import { holdWhileStarting } from '../dist/src/cli/startup-hold.js';
import { buildConfigSchema } from '../dist/src/config/schema.js';
import { writePrecompiledValidator, writeValidatorCodeCache } from '../dist/src/config/precompiled-validator.js';
import { defaultRegistry } from '../dist/src/kinds/index.js';

// The loader's schema: the one without ${VAR} strings (see src/config/check-schema.ts).
await writePrecompiledValidator(buildConfigSchema(defaultRegistry(), { acceptVariables: false }));
// V8 accepts a code cache only under the flags it was made with: those of `eventgate run` starting.
holdWhileStarting(['run']);
writeValidatorCodeCache();
