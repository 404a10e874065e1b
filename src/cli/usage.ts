/**
 * What each command is and takes, in one table: `eventgate --help` (every command), `eventgate
 * COMMAND --help` (one command, each option on a line) and the parser's check of the options a
 * command takes (`'validate' takes --config, --format, --vars-file`) are all read from it.
 */

interface CommandUsage {
  /** After `eventgate `: the command's words and what it takes. */
  synopsis: string;
  /** Its lines in the general usage, beside the synopsis. */
  summary: readonly string[];
  /** What it does, for its own help. */
  about: string;
  /** Each option as shown (`-c, --config FILE`; its `--name` is the parser's) and one line on it. */
  options: readonly (readonly [string, string])[];
  /** Positional arguments it takes, its own name included (`test` also takes test files). */
  args: number;
  example: string;
}

const VARS_FILE = ['--vars-file FILE', '${VAR} values the environment does not set, as KEY=value lines; repeatable'] as const;

const COMMANDS: Record<string, CommandUsage> = {
  run: {
    synopsis: 'run [-c FILE]',
    summary: ['run the gateway (default FILE: ./gateway.yaml)'],
    about:
      'Starts every listener, broker connection and route of FILE and logs JSON lines to stdout. Edits of FILE and of the files it references are hot-reloaded (SIGHUP forces a reload); SIGINT/SIGTERM drain, then exit 0. Exit 1 when the first load fails.',
    options: [['-c, --config FILE', 'the config (default ./gateway.yaml)'], VARS_FILE],
    args: 1,
    example: 'eventgate run -c examples/gateway.yaml',
  },
  validate: {
    synopsis: 'validate [-c FILE] [--format text|json] [--warnings]',
    summary: ['check a config without starting anything', '(a *.tests.yaml FILE: the tests, their config', 'and the routes they name)'],
    about:
      'Checks a config without starting anything: YAML, keys and values, references, expressions, schemas and the files they read. Prints ok (exit 0) or one FILE:LINE:COL: message per problem (exit 1); warnings, which leave the config valid, go to stderr as FILE:LINE:COL: warning: message [EG_CODE]. A *.tests.yaml FILE: the tests, their config and the routes they name.',
    options: [
      ['-c, --config FILE', 'the config or config test file (default ./gateway.yaml)'],
      ['--format text|json', 'text (default), or a JSON array of the errors'],
      ['--warnings', 'with --format json (only): the warnings too, after the errors (severity)'],
      VARS_FILE,
    ],
    args: 1,
    example: 'eventgate validate -c gateway.yaml --format json',
  },
  test: {
    synopsis: 'test [-c FILE] [TESTFILE...] [--format text|junit]',
    summary: ["run config unit tests (default: FILE's tests", 'beside it, e.g. gateway.tests.yaml)'],
    about:
      "Runs config unit tests on FILE's compiled routes, in-process (no socket, no URL called): the TESTFILEs given, or the tests beside FILE (gateway.tests.yaml). Exit 0 when all pass, 1 when any fails (TESTFILE:LINE, expected vs actual), 2 when they cannot run.",
    options: [
      ['-c, --config FILE', 'the config the tests run on (default: the one each test file names or sits beside)'],
      ['--format text|junit', 'text (default), or a JUnit XML report for CI'],
      VARS_FILE,
    ],
    args: Number.POSITIVE_INFINITY,
    example: 'eventgate test -c examples/gateway.yaml --format junit > report.xml',
  },
  plan: {
    synopsis: 'plan -c NEW [--from OLD | --admin URL [--token T]] [--format text|json]',
    summary: ['what a reload to NEW would change (exit 0:', 'nothing, 2: something, 1: NEW is invalid);', 'the admin token also from EVENTGATE_ADMIN_TOKEN'],
    about:
      'Says what a reload to NEW would change against OLD or a running gateway: components added, changed, removed and kept, clients disconnected, consumer groups rejoined. Exit 0 when nothing changes, 2 when something does, 1 when NEW is invalid or no plan could be made.',
    options: [
      ['-c, --config NEW', 'the config to reload to (default ./gateway.yaml)'],
      ['--from OLD', 'the config running now, as a file (without --from or --admin: all of NEW is new)'],
      ['--admin URL', "the running gateway's admin API (e.g. http://127.0.0.1:9090)"],
      ['--token T', 'the admin bearer token (also from EVENTGATE_ADMIN_TOKEN)'],
      ['--format text|json', 'text (default), or a JSON document for CI (with errors and warnings)'],
      VARS_FILE,
    ],
    args: 1,
    example: 'eventgate plan -c gateway.yaml --from old/gateway.yaml',
  },
  export: {
    synopsis: 'export asyncapi [-c FILE]',
    summary: ["print an AsyncAPI 3.0 document of the gateway's", 'channels and operations'],
    about: "Prints an AsyncAPI 3.0 document (YAML) of the gateway's own channels and operations, with the message schemas its validate steps enforce.",
    options: [['-c, --config FILE', 'the config (default ./gateway.yaml)'], VARS_FILE],
    args: 2,
    example: 'eventgate export asyncapi -c gateway.yaml > asyncapi.yaml',
  },
  schema: {
    synopsis: 'schema',
    summary: ['print the JSON Schema of the config'],
    about: "Prints the JSON Schema of the config (the repository's gateway.schema.json), for editors' completion and checks.",
    options: [VARS_FILE],
    args: 1,
    example: 'eventgate schema > gateway.schema.json',
  },
};

export const COMMAND_NAMES = Object.keys(COMMANDS);

/** The options `command` takes, by the parser's names (`config`, `vars-file`); undefined for no command. */
export function commandOptions(command: string): readonly string[] | undefined {
  return COMMANDS[command]?.options.map(([shown]) => /--([a-z-]+)/.exec(shown)![1]!);
}

/** Positional arguments `command` takes, its name included. */
export function commandArgs(command: string): number {
  return COMMANDS[command]?.args ?? 1;
}

const SUMMARY_COLUMN = 55;

/** A command's lines in the general usage: its synopsis, and its summary in a column beside it. */
function summaryLines(synopsis: string, summary: readonly string[]): string[] {
  const head = `  eventgate ${synopsis}`;
  const indent = ' '.repeat(SUMMARY_COLUMN);
  if (summary.length === 0) return [head];
  // A synopsis too long for the column puts its whole summary on the lines below it.
  if (head.length >= SUMMARY_COLUMN - 1) return [head, ...summary.map((line) => indent + line)];
  return [head.padEnd(SUMMARY_COLUMN) + summary[0], ...summary.slice(1).map((line) => indent + line)];
}

/** `eventgate --help`: every command with its synopsis, then the options they share. */
export const USAGE = [
  'usage:',
  ...Object.values(COMMANDS).flatMap(({ synopsis, summary }) => summaryLines(synopsis, summary)),
  ...summaryLines('--version', []),
  ...summaryLines('COMMAND --help', ["a command's options and an example"]),
  '',
  'options:',
  '  -c, --config FILE     the config (default ./gateway.yaml)',
  '  --vars-file FILE      read ${VAR} values from FILE (KEY=value lines) for variables the',
  '                        environment does not set; may be repeated',
].join('\n');

/** `eventgate COMMAND --help` (also `eventgate help COMMAND`); undefined for no such command. */
export function commandUsage(command: string): string | undefined {
  const usage = COMMANDS[command];
  if (!usage) return undefined;
  const options = [...usage.options, ['-h, --help', 'this help'] as const];
  const width = Math.max(...options.map(([shown]) => shown.length)) + 2;
  return [
    `usage: eventgate ${usage.synopsis}`,
    '',
    ...wrap(usage.about, 96),
    '',
    'options:',
    ...options.map(([shown, help]) => `  ${shown.padEnd(width)}${help}`),
    '',
    'example:',
    `  ${usage.example}`,
  ].join('\n');
}

/** `text` in lines of at most `width` characters, broken between words. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  return [...lines, line];
}
