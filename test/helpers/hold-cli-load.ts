import { register } from 'node:module';

/**
 * Preloaded with `node --import` in front of bin/eventgate.js: holds the loading of the CLI's
 * main module (hold-cli-load-hooks.ts) so a test can send a signal in the moments a busy machine
 * spends loading it, without guessing how long they last.
 */
register(new URL('./hold-cli-load-hooks.js', import.meta.url));
