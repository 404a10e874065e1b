#!/usr/bin/env node
// Thin launcher: the CLI is compiled from src/cli by `npm run build` (run by `npm ci` through "prepare").
// The start-up hold of V8 settings must come before the CLI's modules load (src/cli/startup-hold.ts).
// Signals that arrive while the CLI loads are kept for it, not left to end the process (src/cli/early-signals.ts).
import { catchEarlySignals } from '../dist/src/cli/early-signals.js';
import { holdWhileStarting } from '../dist/src/cli/startup-hold.js';

catchEarlySignals(process.argv.slice(2));
holdWhileStarting(process.argv.slice(2));
await import('../dist/src/cli/main.js');
