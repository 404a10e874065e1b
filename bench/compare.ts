/**
 * Same-run comparison on a shared machine. Other work on the machine comes and goes, so the
 * scenario and its baseline are measured in alternating slices (A B A B ...) with both servers
 * up, and the ratio is the median of the ratios of adjacent slices: a burst of load from elsewhere
 * hits one pair, not one side.
 */
import { median } from './stats.js';

export interface Sliced<R> {
  subject: R[];
  baseline: R[];
}

/**
 * How many alternating slices a run of `duration` seconds per side gets, and how long each is: an
 * odd number, up to five, of at least 1.5 s each, so the median of the paired ratios is the middle
 * pair's. With an even number the (nearest-rank) median is the lower of the two middle pairs: a
 * 5 s run had two rounds, and its "median" was the worse of the two.
 */
export function slicing(duration: number): { rounds: number; seconds: number } {
  const fit = Math.max(1, Math.min(5, Math.floor(duration / 1.5)));
  const rounds = fit % 2 === 1 ? fit : fit - 1;
  return { rounds, seconds: duration / rounds };
}

export async function alternate<R>(duration: number, subject: (seconds: number) => Promise<R>, baseline: (seconds: number) => Promise<R>): Promise<Sliced<R>> {
  const { rounds, seconds } = slicing(duration);
  const out: Sliced<R> = { subject: [], baseline: [] };
  for (let i = 0; i < rounds; i++) {
    // Alternate which side goes first, so neither always runs right after the other.
    if (i % 2 === 0) {
      out.baseline.push(await baseline(seconds));
      out.subject.push(await subject(seconds));
    } else {
      out.subject.push(await subject(seconds));
      out.baseline.push(await baseline(seconds));
    }
  }
  return out;
}

/** Median over slices of subject/baseline for one figure. */
export function pairedRatio<R>(s: Sliced<R>, figure: (r: R) => number): number {
  return median(s.subject.map((r, i) => figure(r) / figure(s.baseline[i]!)));
}

export function medianOf<R>(rs: R[], figure: (r: R) => number): number {
  return median(rs.map(figure));
}

export function sumOf<R>(rs: R[], figure: (r: R) => number): number {
  return rs.reduce((n, r) => n + figure(r), 0);
}

/**
 * The same with more than two sides: each round measures every side once, the order rotating from
 * round to round, so each side runs first, in the middle and last equally often.
 */
export async function rotate<R>(duration: number, sides: Record<string, (seconds: number) => Promise<R>>): Promise<Record<string, R[]>> {
  const { rounds, seconds } = slicing(duration);
  const names = Object.keys(sides);
  const out: Record<string, R[]> = Object.fromEntries(names.map((n) => [n, []]));
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length]!;
      out[name]!.push(await sides[name]!(seconds));
    }
  }
  return out;
}

/** Median over rounds of subject/baseline for one figure, for rotate()'s results. */
export function roundRatio<R>(subject: R[], baseline: R[], figure: (r: R) => number): number {
  return median(subject.map((r, i) => figure(r) / figure(baseline[i]!)));
}
