/**
 * A loss / accuracy curve as a self-contained SVG: the training loss per step (light) and its
 * moving average (dark) on the left axis, evaluation accuracy (points + line) on the right axis.
 */
export interface CurveData {
  title: string;
  /** [step, loss] of every (non-skipped) step. */
  loss: [number, number][];
  /** [steps applied, accuracy in 0..1] of every evaluation. */
  accuracy: [number, number][];
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(+t.toPrecision(10));
  return out;
}

export function curveSvg(d: CurveData): string {
  const W = 720, H = 360, L = 60, R = 60, T = 36, B = 44, pw = W - L - R, ph = H - T - B;
  const steps = Math.max(1, ...d.loss.map((p) => p[0] + 1), ...d.accuracy.map((p) => p[0]));
  const losses = d.loss.map((p) => p[1]).filter(Number.isFinite);
  const lmin = losses.length ? Math.min(...losses) : 0, lmax = losses.length ? Math.max(...losses) : 1;
  const lo = lmin - 0.05 * (lmax - lmin || 1), hi = lmax + 0.05 * (lmax - lmin || 1);
  const x = (s: number) => L + (s / steps) * pw;
  const yl = (v: number) => T + (1 - (v - lo) / (hi - lo)) * ph;
  const ya = (a: number) => T + (1 - a) * ph;
  const path = (pts: [number, number][]) => pts.map((p, i) => `${i ? 'L' : 'M'}${p[0].toFixed(1)},${p[1].toFixed(1)}`).join('');
  const win = Math.max(1, Math.round(d.loss.length / 50));
  const smooth: [number, number][] = d.loss.map((p, i) => {
    const from = Math.max(0, i - win + 1);
    let s = 0;
    for (let k = from; k <= i; k++) s += d.loss[k][1];
    return [p[0], s / (i - from + 1)];
  });
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="13">${esc(d.title)}</text>`,
    `<rect x="${L}" y="${T}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`,
  ];
  for (const t of niceTicks(lo, hi)) parts.push(`<text x="${L - 6}" y="${yl(t) + 4}" text-anchor="end" fill="#1f4e9a">${t}</text>`, `<line x1="${L}" x2="${L + pw}" y1="${yl(t)}" y2="${yl(t)}" stroke="#eee"/>`);
  for (const t of niceTicks(0, 1)) parts.push(`<text x="${L + pw + 6}" y="${ya(t) + 4}" fill="#b5430c">${Math.round(t * 100)}%</text>`);
  for (const t of niceTicks(0, steps)) parts.push(`<text x="${x(t)}" y="${T + ph + 16}" text-anchor="middle">${t}</text>`);
  parts.push(`<text x="${L + pw / 2}" y="${H - 8}" text-anchor="middle">step</text>`);
  parts.push(`<text x="14" y="${T + ph / 2}" transform="rotate(-90 14 ${T + ph / 2})" text-anchor="middle" fill="#1f4e9a">training loss</text>`);
  parts.push(`<text x="${W - 10}" y="${T + ph / 2}" transform="rotate(90 ${W - 10} ${T + ph / 2})" text-anchor="middle" fill="#b5430c">eval accuracy</text>`);
  if (d.loss.length) {
    parts.push(`<path d="${path(d.loss.map((p) => [x(p[0] + 1), yl(p[1])]))}" fill="none" stroke="#9db8e3" stroke-width="0.8"/>`);
    parts.push(`<path d="${path(smooth.map((p) => [x(p[0] + 1), yl(p[1])]))}" fill="none" stroke="#1f4e9a" stroke-width="2"/>`);
  }
  if (d.accuracy.length) {
    parts.push(`<path d="${path(d.accuracy.map((p) => [x(p[0]), ya(p[1])]))}" fill="none" stroke="#b5430c" stroke-width="1.5"/>`);
    for (const p of d.accuracy) parts.push(`<circle cx="${x(p[0]).toFixed(1)}" cy="${ya(p[1]).toFixed(1)}" r="3" fill="#b5430c"><title>step ${p[0]}: ${(p[1] * 100).toFixed(1)}%</title></circle>`);
  }
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
