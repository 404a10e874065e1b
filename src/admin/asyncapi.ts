/**
 * API-first contracts: `GET /admin/asyncapi` shows the AsyncAPI documents in force, and
 * `PUT /admin/asyncapi` replaces one. An upload is checked by loading the whole config with it
 * (exactly what the reload will do) before anything is written; only a document the config
 * loads with reaches the disk, atomically, and the reload makes it live.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { formatDiagnostic, formatWarning, type Diagnostic } from '../config/diagnostics.js';
import { redactDiagnostics } from '../config/secrets.js';
import { problem, problemBody, type Problem } from '../core/errors.js';
import { hash } from '../core/canonical.js';
import type { AsyncApiPlan } from '../plan/types.js';
import { sendJson, sendProblem } from '../kinds/listeners/http-reply.js';
import type { AdminServer, AdminSource } from './server.js';

/** Largest document an upload may carry (the body is not buffered beyond it). */
export const MAX_ASYNCAPI_BYTES = 4 * 1024 * 1024;

export function addAsyncApiEndpoints(admin: AdminServer, gateway: AdminSource): void {
  // One upload at a time: each is checked against the documents the previous one left on disk.
  let uploads: Promise<unknown> = Promise.resolve();

  admin.route('GET /admin/asyncapi', (_req, res, query) => {
    const docs = gateway.plan?.asyncapi ?? [];
    const file = query('file');
    if (file !== null) {
      const doc = docs.find((d) => d.asWritten === file);
      if (!doc) return sendProblem(res, unknownFile(file, docs));
      res.writeHead(200, { 'content-type': doc.text.trimStart().startsWith('{') ? 'application/json' : 'application/yaml', 'content-length': Buffer.byteLength(doc.text) });
      res.end(doc.text);
      return;
    }
    sendJson(res, 200, {
      version: gateway.plan?.version ?? null,
      documents: docs.map((d) => ({ file: d.asWritten, asyncapi: d.version, title: d.title, hash: hash(d.text).slice(0, 12), messages: d.messages, channels: d.channels, content: d.text })),
    });
  });

  admin.route('PUT /admin/asyncapi', async (req, res, query) => {
    const docs = gateway.plan?.asyncapi ?? [];
    const file = query('file');
    let target: AsyncApiPlan | undefined;
    if (file === null) {
      if (docs.length > 1)
        return sendProblem(
          res,
          problem('EG_ASYNCAPI_FILE_REQUIRED', `the config has ${docs.length} AsyncAPI documents; say which to replace with ?file= (one of: ${docs.map((d) => d.asWritten).join(', ')})`),
        );
      target = docs[0];
    } else {
      target = docs.find((d) => d.asWritten === file);
    }
    if (!target) return sendProblem(res, unknownFile(file, docs));
    const body = await readBody(req, MAX_ASYNCAPI_BYTES);
    if (body === undefined) {
      return sendProblem(res, problem('EG_PAYLOAD_TOO_LARGE', `an AsyncAPI document may have at most ${MAX_ASYNCAPI_BYTES} bytes`));
    }
    const doc = target;
    const run = uploads.then(() => upload(gateway, doc, body.toString('utf8'), res));
    uploads = run.catch(() => undefined);
    await run;
  });
}

async function upload(gateway: AdminSource, target: AsyncApiPlan, text: string, res: ServerResponse): Promise<void> {
  // The file as it is when the upload arrives: an edit on disk during the check (seconds for a
  // large document) is newer than the upload, and writing over it lost it without a word.
  const before = await readText(target.file);
  const checked = await gateway.load(new Map([[target.file, text]]));
  // A diagnostic may quote a config value: no secret leaves the gateway in the answer (docs/security.md).
  const secrets = new Set([...(gateway.plan?.secretValues ?? []), ...(checked.secrets ?? [])]);
  const configFile = gateway.plan!.file;
  if (!checked.plan) {
    const diagnostics = redactedRelative(configFile, checked.diagnostics, secrets);
    return sendRefusal(res, refusal(target, diagnostics), diagnostics);
  }
  // What `eventgate validate` prints on stderr for the config with this document (a field the new payload no longer declares): said in the answer too, not only in the log.
  const warnings = redactedRelative(configFile, checked.warnings ?? [], secrets).map(formatWarning);
  if ((await readText(target.file)) !== before) {
    return sendProblem(
      res,
      problem(
        'EG_ASYNCAPI_CHANGED_ON_DISK',
        `${target.asWritten} changed on disk while the upload was checked; the file's change is newer and stays, nothing was written (upload again to replace it)`,
      ),
    );
  }
  // `unchanged` means identical to the document in force before the upload (docs/asyncapi.md), not
  // what the reload found: one already under way (the watcher's, POST /admin/reload) may read the
  // new document first, and the upload's own then finds nothing left to change; another file's
  // edit, read by either, changes the version without this document changing.
  const versionBefore = gateway.plan?.version;
  const inForce = gateway.plan?.asyncapi?.find((d) => d.file === target.file)?.text;
  try {
    await writeAtomically(target.file, text);
  } catch (err) {
    return sendProblem(res, problem('EG_INTERNAL', `could not write ${target.asWritten}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; nothing was changed`));
  }
  const result = await gateway.reload(`AsyncAPI upload of ${target.asWritten}`);
  if (result.result === 'rejected' || result.result === 'rolled_back') {
    // Something else changed between the check and the reload (or a component could not start): put the document back.
    if (before !== undefined) await writeAtomically(target.file, before);
    return sendRefusal(
      res,
      problem('EG_ASYNCAPI_INVALID', `the gateway could not apply the document (${result.reason}); ${target.asWritten} was restored`),
      result.result === 'rejected' ? relativeTo(gateway.plan!.file, result.diagnostics) : [],
    );
  }
  gateway.logger.info({ file: target.asWritten, version: result.version }, 'AsyncAPI document uploaded');
  const applied = text !== inForce && (result.result === 'applied' || result.version !== versionBefore);
  sendJson(res, 200, { result: applied ? 'applied' : 'unchanged', version: result.version, file: target.asWritten, ...(warnings.length > 0 ? { warnings } : {}) });
}

/** 422 when the document itself (or the config with it) does not load; 409 when it parses but lacks what the config names. */
function refusal(target: AsyncApiPlan, diagnostics: Diagnostic[]): Problem {
  const invalid = diagnostics.filter((d) => d.code !== 'EG_CONFIG_ASYNCAPI_REF');
  if (invalid.length > 0) {
    const own = diagnostics.some((d) => d.code === 'EG_CONFIG_ASYNCAPI');
    return problem(
      'EG_ASYNCAPI_INVALID',
      own
        ? `the document does not parse as AsyncAPI (${invalid.length} problem${invalid.length === 1 ? '' : 's'}); nothing was changed`
        : `the config would not load with this document (${invalid.length} problem${invalid.length === 1 ? '' : 's'}); nothing was changed`,
    );
  }
  return problem('EG_ASYNCAPI_CONFLICT', `the config uses AsyncAPI messages or channels that ${target.asWritten} would no longer provide; nothing was changed`);
}

/** `diagnostics` name files relative to the config's directory (relativeTo), as the config (and `?file=`) write them. */
function sendRefusal(res: ServerResponse, p: Problem, diagnostics: Diagnostic[]): void {
  const errors = diagnostics.map(formatDiagnostic);
  const text = JSON.stringify({
    ...problemBody({ ...p, errors }),
    diagnostics: diagnostics.map((d) => ({ file: d.file, line: d.line, column: d.column, message: d.message, path: d.path, code: d.code })),
  });
  res.writeHead(p.status, { 'content-type': 'application/problem+json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Whoever uploads learns nothing about the host's file system: no absolute path of the config's directory. */
/**
 * Redacted with the files and the config's directory shown as they are, then relativeTo. Not the
 * other way round: made relative first, a secret that held the directory (`site/app/levels` with
 * the config in /app) lost it from its text and was no longer redacted (`sitelevels`); redacted
 * plainly first, a directory named like a variable's value was no longer the config's.
 */
function redactedRelative(configFile: string, found: Diagnostic[], secrets: ReadonlySet<string>): Diagnostic[] {
  return relativeTo(configFile, redactDiagnostics(found, secrets, [`${dirname(resolve(configFile))}/`]));
}

function relativeTo(configFile: string, found: Diagnostic[]): Diagnostic[] {
  const dir = dirname(resolve(configFile));
  return found.map((d) => ({ ...d, file: relative(dir, resolve(d.file)), message: d.message.split(`${dir}/`).join('') }));
}

function unknownFile(file: string | null, docs: readonly AsyncApiPlan[]): Problem {
  if (docs.length === 0) return problem('EG_ASYNCAPI_UNKNOWN_FILE', 'the config has no AsyncAPI document (add `asyncapi: <file>` to it first)');
  return problem('EG_ASYNCAPI_UNKNOWN_FILE', `'${file}' is not one of the config's AsyncAPI documents: ${docs.map((d) => d.asWritten).join(', ')} (use the path as the config writes it)`);
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** Temp file in the same directory, then rename: readers (and the watcher) see the old file or the new one, never half of one. */
async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const mode = await stat(file).then(
    (s) => s.mode & 0o777,
    () => 0o644,
  );
  try {
    await writeFile(tmp, text, { mode });
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/**
 * Buffers at most `max` bytes; undefined when the body is larger. The rest is read and dropped,
 * so the client gets its answer after sending, not a reset connection mid-upload.
 */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? undefined : Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}
