#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli by `npm run build` (run by `npm ci` through "prepare").
// The start-up hold of V8 settings must come before the CLI's modules load (src/cli/startup-hold.ts).
import { holdWhileStarting } from '../dist/src/cli/startup-hold.js';

holdWhileStarting(process.argv.slice(2));
await import('../dist/src/cli/main.js');
