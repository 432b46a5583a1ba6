// A small grouped bar chart of throughput ratios (traced / untraced) as a standalone SVG: one group
// per scenario, one bar per variant (median, with a min–max whisker), the target dashed,
// and behind them a grey band: the spread of the untraced runs against each other (the noise).

import type { BenchResults, ThroughputScenario } from '../lib/types';

const COLORS = ['#1f77b4', '#6baed6', '#ff7f0e', '#2ca02c', '#9467bd', '#c5b0d5', '#8c564b', '#e377c2'];

interface Group {
  title: string;
  target?: number;
  scenario: ThroughputScenario;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function chartSvg(r: BenchResults): string {
  const s = r.scenarios;
  const groups: Group[] = [];
  if (s.helloPinned) groups.push({ title: 'hello, pinned', target: 0.5, scenario: s.helloPinned });
  if (s.helloUnpinned) groups.push({ title: 'hello, unpinned', target: 0.4, scenario: s.helloUnpinned });
  if (s.helloGoPinned) groups.push({ title: 'hello (Go), pinned', scenario: s.helloGoPinned });
  if (s.chain) groups.push({ title: 'chain node→java', target: 0.98, scenario: s.chain });
  const variants = r.variants.filter((v) => v.id !== 'untraced' && groups.some((g) => g.scenario.variants.some((x) => x.variant === v.id)));

  const W = 760, H = 380, left = 50, right = 10, top = 48, bottom = 90; // prettier-ignore
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const tops = groups.flatMap((g) => g.scenario.variants.map((v) => v.ratio.max)).filter(Number.isFinite);
  const yMax = Math.min(3, Math.max(1.2, Math.ceil(Math.max(0, ...tops) * 5) / 5)); // 0.2 steps
  const y = (v: number): number => top + plotH * (1 - Math.min(v, yMax) / yMax);
  const groupW = plotW / Math.max(1, groups.length);
  const barW = Math.min(28, (groupW - 30) / Math.max(1, variants.length));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13">Throughput relative to untraced: median of rounds, whisker min–max</text>`);
  out.push(`<text x="${W / 2}" y="31" text-anchor="middle" font-size="11" fill="#555">red dashes: target; grey band: untraced runs against each other (noise)</text>`);
  const step = yMax > 1.6 ? 0.5 : 0.2;
  for (let t = 0; t <= yMax + 1e-9; t += step) {
    out.push(`<line x1="${left}" x2="${W - right}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`);
    out.push(`<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${t.toFixed(1)}</text>`);
  }
  out.push(`<line x1="${left}" x2="${W - right}" y1="${y(1)}" y2="${y(1)}" stroke="#999"/>`);
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + (groupW - barW * variants.length) / 2;
    const noise = g.scenario.variants.find((x) => x.variant === 'untraced')?.ratio;
    if (noise && Number.isFinite(noise.min) && Number.isFinite(noise.max)) {
      out.push(`<rect x="${x0 - 6}" y="${y(noise.max)}" width="${barW * variants.length + 12}" height="${y(noise.min) - y(noise.max)}" fill="#bbb" fill-opacity="0.35"/>`);
    }
    variants.forEach((v, vi) => {
      const summary = g.scenario.variants.find((x) => x.variant === v.id);
      if (!summary || !Number.isFinite(summary.ratio.median)) return;
      const x = x0 + vi * barW;
      const { median, min, max } = summary.ratio;
      out.push(`<rect x="${x + 2}" y="${y(median)}" width="${barW - 4}" height="${y(0) - y(median)}" fill="${COLORS[vi % COLORS.length]}"><title>${esc(v.label)}: ${median.toFixed(3)} (${min.toFixed(3)}–${max.toFixed(3)})</title></rect>`);
      out.push(`<line x1="${x + barW / 2}" x2="${x + barW / 2}" y1="${y(min)}" y2="${y(max)}" stroke="black"/>`);
      out.push(`<text x="${x + barW / 2}" y="${y(Math.max(median, max)) - 4}" text-anchor="middle" font-size="9">${median.toFixed(2)}</text>`);
    });
    if (g.target !== undefined) {
      out.push(`<line x1="${x0 - 6}" x2="${x0 + barW * variants.length + 6}" y1="${y(g.target)}" y2="${y(g.target)}" stroke="red" stroke-dasharray="5,3"/>`);
    }
    out.push(`<text x="${left + gi * groupW + groupW / 2}" y="${y(0) + 16}" text-anchor="middle" font-size="12">${esc(g.title)}</text>`);
  });
  // legend, two rows under the groups
  const perRow = Math.ceil(variants.length / 2);
  variants.forEach((v, vi) => {
    const lx = left + (vi % perRow) * (plotW / perRow);
    const ly = H - bottom + 40 + Math.floor(vi / perRow) * 18;
    out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${COLORS[vi % COLORS.length]}"/>`);
    out.push(`<text x="${lx + 14}" y="${ly}">${esc(v.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
