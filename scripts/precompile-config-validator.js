#!/usr/bin/env node
// Compiles the config schema's validator once, at build time (see src/config/precompiled-validator.ts).
import { buildConfigSchema } from '../dist/src/config/schema.js';
import { writePrecompiledValidator } from '../dist/src/config/precompiled-validator.js';
import { defaultRegistry } from '../dist/src/kinds/index.js';

// The loader's schema: the one without ${VAR} strings (see src/config/check-schema.ts).
writePrecompiledValidator(buildConfigSchema(defaultRegistry(), { acceptVariables: false }));
