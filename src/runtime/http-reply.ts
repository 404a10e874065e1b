// Moved to ../kinds/listeners/http-reply.js (issue #15). This re-export keeps branches started before the move compiling; it goes
// away in #15's last landing — import the new path.
export * from '../kinds/listeners/http-reply.js';
