import { relative } from 'node:path';
import type { TestResult } from './run-tests.js';

/**
 * Readable results: one line per test with the place it is written (the run may span several test
 * files), and under each failure what differed and where the expectation is.
 */
export function textReport(results: readonly TestResult[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const where = `${r.test.file}:${r.test.line}`;
    if (r.passed) {
      lines.push(`ok    ${r.test.route}: ${r.test.name} (${where})`);
      continue;
    }
    lines.push(`FAIL  ${r.test.route}: ${r.test.name} (${where})`);
    for (const m of r.mismatches) {
      lines.push(`      ${r.test.file}:${m.line}: ${m.what}`);
      lines.push(`        - expected: ${indented(m.expected, 20)}`);
      lines.push(`        + actual:   ${indented(m.actual, 20)}`);
    }
  }
  const failed = results.filter((r) => !r.passed).length;
  lines.push('');
  lines.push(failed === 0 ? `${results.length} ${results.length === 1 ? 'test' : 'tests'} passed` : `${failed} of ${results.length} tests failed`);
  return `${lines.join('\n')}\n`;
}

/** JUnit XML, the format CI systems (GitLab, Jenkins, GitHub test reporters) read: one suite per test file. */
export function junitReport(results: readonly TestResult[]): string {
  const byFile = new Map<string, TestResult[]>();
  for (const r of results) byFile.set(r.test.file, [...(byFile.get(r.test.file) ?? []), r]);
  const out = ['<?xml version="1.0" encoding="UTF-8"?>'];
  const failures = results.filter((r) => !r.passed).length;
  out.push(`<testsuites name="eventgate" tests="${results.length}" failures="${failures}" errors="0" time="${seconds(results)}">`);
  for (const [file, rs] of byFile) {
    const name = relative(process.cwd(), file) || file;
    out.push(`  <testsuite name="${xml(name)}" tests="${rs.length}" failures="${rs.filter((r) => !r.passed).length}" errors="0" skipped="0" time="${seconds(rs)}">`);
    for (const r of rs) {
      const head = `  <testcase classname="${xml(r.test.route)}" name="${xml(r.test.name)}" file="${xml(name)}" line="${r.test.line}" time="${(r.durationMs / 1000).toFixed(3)}"`;
      if (r.passed) {
        out.push(`  ${head}/>`);
        continue;
      }
      const first = r.mismatches[0]!;
      const body = r.mismatches.map((m) => `${r.test.file}:${m.line}: ${m.what}\n  - expected: ${indented(m.expected, 14)}\n  + actual:   ${indented(m.actual, 14)}`).join('\n');
      out.push(`  ${head}>`);
      out.push(`      <failure message="${xml(`${first.what}: expected ${first.expected}, got ${first.actual}`)}" type="AssertionError">${xml(body)}</failure>`);
      out.push('    </testcase>');
    }
    out.push('  </testsuite>');
  }
  out.push('</testsuites>');
  return `${out.join('\n')}\n`;
}

/**
 * JUnit XML for a run that could not start (exit 2: an invalid config, an unreadable test file, no
 * tests): one test in error whose text is `problems`, so a CI job that saves the report shows why
 * rather than an empty file its test view refuses (pytest reports a collection error so).
 */
export function junitCannotRun(problems: readonly string[]): string {
  const message = problems[0] ?? 'the tests could not run';
  return `${[
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<testsuites name="eventgate" tests="1" failures="0" errors="1" time="0.000">',
    '  <testsuite name="eventgate test" tests="1" failures="0" errors="1" skipped="0" time="0.000">',
    '    <testcase classname="eventgate" name="the tests could not run" time="0.000">',
    `      <error message="${xml(message)}" type="ConfigError">${xml(problems.join('\n'))}</error>`,
    '    </testcase>',
    '  </testsuite>',
    '</testsuites>',
  ].join('\n')}\n`;
}

/** A value of several lines (a problem's detail and its errors) kept under its `- expected:` / `+ actual:` label. */
function indented(text: string, column: number): string {
  return text.replace(/\n/g, `\n${' '.repeat(column)}`);
}

function seconds(rs: readonly TestResult[]): string {
  return (rs.reduce((s, r) => s + r.durationMs, 0) / 1000).toFixed(3);
}

function xml(s: string): string {
  // Characters XML 1.0 cannot carry at all (control characters, U+FFFE, U+FFFF, lone surrogates:
  // a message value may hold any of them) are dropped; the rest escaped.
  // eslint-disable-next-line no-control-regex
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]|\p{Surrogate}/gu, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}
