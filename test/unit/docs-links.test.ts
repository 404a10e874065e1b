import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/gateway.js';

/** The pages a reader follows links between. */
const pages = [
  'README.md',
  'schemas/README.md',
  ...readdirSync(join(repoRoot, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** Lines outside fenced code blocks, with their numbers: links and headings live there only. */
function prose(text: string): [number, string][] {
  const out: [number, string][] = [];
  let fenced = false;
  text.split('\n').forEach((line, i) => {
    if (/^\s*```/.test(line)) fenced = !fenced;
    else if (!fenced) out.push([i + 1, line]);
  });
  return out;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, line] of prose(readFileSync(file, 'utf8'))) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const slug = heading[1]!
      .replace(/`/g, '')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(slug);
    seen.set(slug, (n ?? -1) + 1);
    out.add(n === undefined ? slug : `${slug}-${n + 1}`);
  }
  return out;
}

describe('the links of README.md and docs/', () => {
  it('lead to files that exist, and to headings that exist there', () => {
    const broken: string[] = [];
    let links = 0;
    for (const page of pages) {
      const file = join(repoRoot, page);
      for (const [n, line] of prose(readFileSync(file, 'utf8'))) {
        // Inline code is no link, even when it looks like one.
        for (const m of line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)) {
          const href = m[1]!;
          if (/^[a-z]+:/.test(href)) continue;
          links++;
          const [path, anchor] = href.split('#') as [string, string | undefined];
          const target = path ? resolve(dirname(file), path) : file;
          if (!existsSync(target)) broken.push(`${page}:${n}: ${href}: no such file`);
          else if (anchor !== undefined && target.endsWith('.md') && !anchors(target).has(anchor)) broken.push(`${page}:${n}: ${href}: no heading #${anchor} in ${relative(repoRoot, target)}`);
        }
      }
    }
    assert.ok(links > 20, `only ${links} links found: is the pattern still right?`);
    assert.deepEqual(broken, []);
  });
});
