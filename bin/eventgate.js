#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli by `npm run build` (run by `npm ci` through "prepare").
// The young-generation hold must come before the CLI's modules load (src/cli/young-generation.ts).
import { holdYoungGeneration } from '../dist/src/cli/young-generation.js';

holdYoungGeneration(process.argv.slice(2));
await import('../dist/src/cli/main.js');
