// The chart of a bench run: training-step time against M, one panel per (r, I = O), log-log, with
// ours fused, ours unfused, PyTorch and the base GEMM alone as lines. Plain SVG written by hand (no
// plotting dependency); the PNG is the same SVG rendered by @resvg/resvg-js where it is installed.

export interface ChartRow {
  M: number;
  I: number;
  r: number;
  baseMs: number;
  stepFusedMs: number;
  stepUnfusedMs: number | null;
  torchStepMs: number | null;
}

interface Series {
  label: string;
  color: string;
  dash?: string;
  width: number;
  value: (row: ChartRow) => number | null;
}

const SERIES: Series[] = [
  { label: 'fused-lora step, fused', color: '#1f5fbf', width: 3, value: (r) => r.stepFusedMs },
  { label: 'fused-lora step, unfused (PEFT order)', color: '#6fa8ff', width: 2, dash: '7 4', value: (r) => r.stepUnfusedMs },
  { label: 'PyTorch step (PEFT order)', color: '#d9480f', width: 2.5, value: (r) => r.torchStepMs },
  { label: 'base GEMM alone (x·Wᵀ + b)', color: '#777777', width: 2, dash: '2 4', value: (r) => r.baseMs },
];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmtMs = (v: number) => (v >= 1 ? `${+v.toPrecision(3)}` : `${+v.toPrecision(2)}`);

export function stepChartSvg(rows: ChartRow[], title: string, subtitle: string): string {
  const ranks = [...new Set(rows.map((r) => r.r))].sort((a, b) => a - b);
  const sizes = [...new Set(rows.map((r) => r.I))].sort((a, b) => a - b);
  const Ms = [...new Set(rows.map((r) => r.M))].sort((a, b) => a - b);
  const pw = 360, ph = 250, padL = 70, padT = 142, gapX = 40, gapY = 62, padB = 60;
  const width = Math.max(padL + sizes.length * pw + (sizes.length - 1) * gapX + 30, 900);
  const height = padT + ranks.length * ph + (ranks.length - 1) * gapY + padB;

  const values = rows.flatMap((row) => SERIES.map((s) => s.value(row))).filter((v): v is number => v !== null && v > 0);
  const yLo = Math.floor(Math.log10(Math.min(...values)));
  const yHi = Math.ceil(Math.log10(Math.max(...values)));
  const xLo = Math.log10(Math.min(...Ms)), xHi = Math.log10(Math.max(...Ms));
  const xOf = (M: number) => (xHi === xLo ? pw / 2 : ((Math.log10(M) - xLo) / (xHi - xLo)) * (pw - 20) + 10);
  const yOf = (v: number) => ph - ((Math.log10(v) - yLo) / (yHi - yLo || 1)) * ph;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${padL}" y="30" font-size="20" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="${padL}" y="52" font-size="13" fill="#444">${esc(subtitle)}</text>`);
  // Legend: two columns, two rows.
  SERIES.forEach((s, i) => {
    const lx = padL + (i % 2) * 380, ly = 76 + Math.floor(i / 2) * 20;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 34}" y2="${ly}" stroke="${s.color}" stroke-width="${s.width + 1}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${lx + 42}" y="${ly + 5}" font-size="13">${esc(s.label)}</text>`);
  });

  ranks.forEach((rank, ri) => {
    sizes.forEach((size, ci) => {
      const ox = padL + ci * (pw + gapX), oy = padT + ri * (ph + gapY);
      const panel = rows.filter((row) => row.r === rank && row.I === size).sort((a, b) => a.M - b.M);
      out.push(`<g transform="translate(${ox},${oy})">`);
      out.push(`<rect width="${pw}" height="${ph}" fill="#fafafa" stroke="#bbb"/>`);
      for (let d = yLo; d <= yHi; d++) {
        const y = yOf(10 ** d);
        out.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="#e2e2e2"/>`);
        if (ci === 0) out.push(`<text x="-8" y="${y + 4}" font-size="12" text-anchor="end">${fmtMs(10 ** d)}</text>`);
      }
      for (const M of Ms) {
        const x = xOf(M);
        out.push(`<line x1="${x}" x2="${x}" y1="0" y2="${ph}" stroke="#eeeeee"/>`);
        out.push(`<text x="${x}" y="${ph + 16}" font-size="12" text-anchor="middle">${M}</text>`);
      }
      out.push(`<text x="${pw / 2}" y="-8" font-size="14" font-weight="bold" text-anchor="middle">I = O = ${size}, r = ${rank}</text>`);
      for (const s of SERIES) {
        const pts = panel.map((row) => [row.M, s.value(row)] as const).filter((p): p is readonly [number, number] => p[1] !== null && p[1] > 0);
        if (pts.length === 0) continue;
        const d = pts.map(([M, v], i) => `${i ? 'L' : 'M'}${xOf(M).toFixed(1)},${yOf(v).toFixed(1)}`).join(' ');
        out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
        for (const [M, v] of pts) out.push(`<circle cx="${xOf(M).toFixed(1)}" cy="${yOf(v).toFixed(1)}" r="3" fill="${s.color}"/>`);
      }
      // The fused step's multiple of the base GEMM at the largest M of the panel: the number to read.
      const last = panel[panel.length - 1];
      if (last) out.push(`<text x="${pw - 8}" y="${ph - 10}" font-size="12" text-anchor="end" fill="#1f5fbf">step / base at M = ${last.M}: ${(last.stepFusedMs / last.baseMs).toFixed(2)}</text>`);
      if (ri === ranks.length - 1) out.push(`<text x="${pw / 2}" y="${ph + 36}" font-size="13" text-anchor="middle">M (rows = batch × tokens)</text>`);
      if (ci === 0) out.push(`<text transform="translate(-52,${ph / 2}) rotate(-90)" font-size="13" text-anchor="middle">ms per step (log)</text>`);
      out.push(`</g>`);
    });
  });
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}

/** Renders the SVG to PNG with @resvg/resvg-js; null (and the reason) where it is not installed. */
export function svgToPng(svg: string): { png: Uint8Array | null; reason?: string } {
  let Resvg: new (svg: string, opts?: object) => { render(): { asPng(): Buffer } };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    ({ Resvg } = require('@resvg/resvg-js'));
  } catch (e) {
    return { png: null, reason: `@resvg/resvg-js is not installed (${(e as Error).message.split('\n')[0]})` };
  }
  const r = new Resvg(svg, { fitTo: { mode: 'zoom', value: 1.5 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } });
  return { png: r.render().asPng() };
}
