/** The soak's plot: one panel per series over time, as a self-contained SVG (soak.ts renders it to PNG). */

export interface Series {
  title: string;
  /** [minutes, value] */
  points: [number, number][];
  /** A target drawn as a dashed line. */
  limit?: number;
}

const WIDTH = 1000;
const PANEL = 220;
const TOP = 40;
const LEFT = 70;
const RIGHT = 20;

export function renderPlot(series: Series[], opts: { warmupMinutes: number; caption: string }): string {
  const height = TOP + series.length * (PANEL + 20) + 30;
  const xMax = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const x = (t: number) => LEFT + (t / xMax) * (WIDTH - LEFT - RIGHT);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${LEFT}" y="24" font-size="15">${escapeXml(opts.caption)}</text>`,
  ];
  series.forEach((s, i) => {
    const top = TOP + i * (PANEL + 20);
    const bottom = top + PANEL - 30;
    const values = s.points.map((p) => p[1]).filter(Number.isFinite);
    const yMax = 4 * niceCeil((Math.max(1e-9, s.limit ?? 0, ...values) * 1.1) / 4);
    const y = (v: number) => bottom - (v / yMax) * (bottom - top - 20);
    parts.push(`<text x="${LEFT}" y="${top + 12}" font-weight="bold">${escapeXml(s.title)}</text>`);
    parts.push(`<rect x="${x(0)}" y="${top + 20}" width="${x(Math.min(opts.warmupMinutes, xMax)) - x(0)}" height="${bottom - top - 20}" fill="#f2f2f2"/>`);
    for (let k = 0; k <= 4; k++) {
      const v = (yMax * k) / 4;
      parts.push(`<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${LEFT - 6}" y="${y(v) + 4}" text-anchor="end">${fmt(v)}</text>`);
    }
    const step = niceCeil(xMax / 8);
    for (let t = 0; t <= xMax + 1e-9; t += step) {
      parts.push(`<text x="${x(t)}" y="${bottom + 16}" text-anchor="middle">${fmt(t)}</text>`);
    }
    parts.push(`<text x="${WIDTH - RIGHT}" y="${bottom + 16}" text-anchor="end">min</text>`);
    if (s.limit !== undefined)
      parts.push(
        `<line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${y(s.limit)}" y2="${y(s.limit)}" stroke="#c00" stroke-dasharray="6 4"/><text x="${WIDTH - RIGHT}" y="${y(s.limit) - 4}" text-anchor="end" fill="#c00">target ${fmt(s.limit)}</text>`,
      );
    const path = s.points
      .filter((p) => Number.isFinite(p[1]))
      .map((p, j) => `${j === 0 ? 'M' : 'L'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join(' ');
    parts.push(`<path d="${path}" fill="none" stroke="#1f5fbf" stroke-width="1.8"/>`);
    parts.push(`<line x1="${LEFT}" x2="${LEFT}" y1="${top + 20}" y2="${bottom}" stroke="#333"/><line x1="${LEFT}" x2="${WIDTH - RIGHT}" y1="${bottom}" y2="${bottom}" stroke="#333"/>`);
  });
  parts.push(`<text x="${LEFT}" y="${height - 8}" fill="#666">grey: warm-up (not judged)</text>`, '</svg>');
  return parts.join('\n');
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 1 : 0);
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}
