/** "Did you mean" hints for misspelt keys and names. */

/**
 * Informal spellings of a word no edit distance reaches without hinting noise elsewhere (`thru` is
 * three edits from `through`, past a four-letter word's two): hinted wherever their word is a candidate.
 */
const INFORMAL_SPELLINGS: Readonly<Record<string, string>> = { thru: 'through' };

/** `maxDistance`: the most edits a hint may be away, by default about one per three characters (at least 2). */
export function closest(word: string, candidates: Iterable<string>, maxDistance = Math.max(2, Math.floor(word.length / 3))): string | undefined {
  const lower = word.toLowerCase();
  const formal = Object.hasOwn(INFORMAL_SPELLINGS, lower) ? INFORMAL_SPELLINGS[lower] : undefined;
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (formal !== undefined && candidate.toLowerCase() === formal) return candidate;
    const d = editDistance(lower, candidate.toLowerCase());
    // A tie goes to two letters swapped (`--form`: `--from`, not `--format`), then to the word the
    // typed one abbreviates (`$rnd` is two edits from `$pad` and from `$round`, and means the one
    // whose letters it keeps in order).
    if (d < bestDistance || (d === bestDistance && tieRank(lower, candidate.toLowerCase()) > tieRank(lower, best!.toLowerCase()))) {
      bestDistance = d;
      best = candidate;
    }
  }
  // Allow roughly one typo per three characters; beyond that the hint is noise.
  if (best === undefined || bestDistance > maxDistance) return undefined;
  return best;
}

/** How well `candidate` explains `typed` among suggestions as many edits away: 2 two adjacent letters swapped, 1 an abbreviation, else 0. */
function tieRank(typed: string, candidate: string): number {
  if (typed.length === candidate.length) {
    const at = [...typed].findIndex((c, i) => c !== candidate[i]);
    if (at !== -1 && typed[at] === candidate[at + 1] && typed[at + 1] === candidate[at] && typed.slice(at + 2) === candidate.slice(at + 2)) return 2;
  }
  return abbreviates(typed, candidate) ? 1 : 0;
}

/** Whether `short` is `word` with letters left out (its letters appear in `word`, in order). */
function abbreviates(short: string, word: string): boolean {
  let i = 0;
  for (const c of word) if (c === short[i]) i++;
  return i === short.length;
}

export function didYouMean(word: string, candidates: Iterable<string>): string {
  const hint = closest(word, candidates);
  return hint === undefined ? '' : ` (did you mean '${hint}'?${lookalike(word, hint)})`;
}

/** Cyrillic and Greek letters printed as the Latin letter beside them (a homoglyph; `ж` is not one). */
const LOOKS_LATIN = new Map(
  [...'аaвBеeкkмMнHоoрpсcтTуyхxіiјjѕsԁdӏlАAВBЕEКKМMНHОOРPСCТTХXІIЈJЅSοoαaνvρpτtυuικkΑAΒBΕEΖZΗHΙIΚKΜMΝNΟOΡPΤTΥYΧX'].flatMap((c, i, all) => (i % 2 === 0 ? [[c, all[i + 1]!] as const] : [])),
);

/**
 * `rоutes` (a Cyrillic о) and `routes` print the same: the hint alone shows two spellings a reader
 * cannot tell apart. Names the first character outside ASCII where the hint has an ASCII letter,
 * saying what it is: a letter of Cyrillic or Greek that prints as the Latin one (LOOKS_LATIN), the hint's
 * letter with a mark (`é`) or in another form (full-width `ｒ`), or a character that prints
 * nothing (a zero-width space, which `rou\u200Btes` holds and the hint has not).
 */
function lookalike(word: string, hint: string): string {
  const typed = [...word];
  const meant = [...hint];
  const code = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  const invisible = typed.find((c) => /^[\p{Cf}\p{Zs}]$/u.test(c) && c !== ' ');
  if (invisible !== undefined && typed.filter((c) => c !== invisible).join('') === hint) return ` '${word}' has ${code(invisible)}, a character that prints nothing, which '${hint}' has not`;
  if (typed.length !== meant.length) return '';
  const at = typed.findIndex((c, i) => c !== meant[i] && c.codePointAt(0)! > 0x7f && /^[A-Za-z0-9]$/.test(meant[i]!));
  if (at < 0) return '';
  const c = typed[at]!;
  const m = meant[at]!;
  const what =
    c.normalize('NFKC') === m
      ? `another form of '${m}'`
      : c.normalize('NFD')[0] === m
        ? `'${m}' with a mark`
        : LOOKS_LATIN.get(c) === m
          ? 'a character of another script that looks the same'
          : 'a character of another script';
  return ` '${word}' has ${code(c)} where '${hint}' has '${m}', ${what}`;
}

/**
 * The hint after "must be one of ..., got X" for a value outside an enum: another tool's spelling
 * the enum's `aliases` names is told the value it stands for; a number written in
 * quotes (`qos: "1"`) is told to lose them; a misspelt string gets the nearest allowed string. A
 * number gets no hint otherwise: the allowed values are listed, and the nearest digit by spelling is no guess.
 */
export function enumHint(value: unknown, allowed: readonly unknown[], aliases?: Readonly<Record<string, string>>): string {
  // Another tool's spelling of an allowed value (Kafka's `acks=1` for `leader`), as the schema's `x-aliases` lists them.
  const written = typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
  if (aliases !== undefined && written !== undefined && Object.hasOwn(aliases, written)) return ` (${written} is written '${aliases[written]}' here)`;
  if (typeof value !== 'string') return '';
  const unquoted = allowed.find((a) => typeof a !== 'string' && String(a) === value);
  if (unquoted !== undefined) return ` (write it without quotes: ${String(unquoted)})`;
  return didYouMean(
    value,
    allowed.filter((a): a is string => typeof a === 'string'),
  );
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}
