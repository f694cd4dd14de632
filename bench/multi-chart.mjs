// The chart of a multi-adapter run: the speed-up of one batch over one adapter at a time against the
// rows per adapter (m, log axis), one line per K, one panel per I = O. Plain SVG written by hand, as
// bench/cpu/chart.ts draws the step chart (no plotting dependency); 1× is drawn as the line to beat.

const COLORS = ['#1f5fbf', '#d9480f', '#2b8a3e', '#862e9c', '#777777'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** rows: { K, rowsPerAdapter, I, speedup, speedupInterleaved }[] */
export function speedupChartSvg(rows, title, subtitle) {
  const sizes = [...new Set(rows.map((r) => r.I))].sort((a, b) => a - b);
  const Ks = [...new Set(rows.map((r) => r.K))].sort((a, b) => a - b);
  const ms = [...new Set(rows.map((r) => r.rowsPerAdapter))].sort((a, b) => a - b);
  const pw = 380, ph = 260, padL = 70, padT = 118, gapX = 50, padB = 62;
  const width = Math.max(padL + sizes.length * pw + (sizes.length - 1) * gapX + 30, 700);
  const height = padT + ph + padB;
  const yHi = Math.max(2, Math.ceil(Math.max(...rows.map((r) => r.speedup)) * 2) / 2);
  const xLo = Math.log10(Math.min(...ms)), xHi = Math.log10(Math.max(...ms));
  const xOf = (m) => (xHi === xLo ? pw / 2 : ((Math.log10(m) - xLo) / (xHi - xLo)) * (pw - 40) + 20);
  const yOf = (v) => ph - (v / yHi) * ph;

  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${padL}" y="30" font-size="20" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="${padL}" y="52" font-size="13" fill="#444">${esc(subtitle)}</text>`);
  Ks.forEach((K, i) => {
    const lx = padL + i * 120, ly = 78;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 34}" y2="${ly}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"/>`);
    out.push(`<text x="${lx + 42}" y="${ly + 5}" font-size="13">K = ${K}</text>`);
  });
  sizes.forEach((size, ci) => {
    const ox = padL + ci * (pw + gapX), oy = padT;
    out.push(`<g transform="translate(${ox},${oy})">`);
    out.push(`<rect width="${pw}" height="${ph}" fill="#fafafa" stroke="#bbb"/>`);
    for (let v = 0; v <= yHi + 1e-9; v += 0.5) {
      const y = yOf(v);
      out.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="${v === 1 ? '#999' : '#e2e2e2'}"${v === 1 ? ' stroke-dasharray="4 3"' : ''}/>`);
      if (ci === 0) out.push(`<text x="-8" y="${y + 4}" font-size="12" text-anchor="end">${v.toFixed(1)}×</text>`);
    }
    for (const m of ms) {
      const x = xOf(m);
      out.push(`<line x1="${x}" x2="${x}" y1="0" y2="${ph}" stroke="#eeeeee"/>`);
      out.push(`<text x="${x}" y="${ph + 16}" font-size="12" text-anchor="middle">${m}</text>`);
    }
    out.push(`<text x="${pw / 2}" y="-8" font-size="14" font-weight="bold" text-anchor="middle">I = O = ${size}, r = ${rows[0].r ?? 16}</text>`);
    Ks.forEach((K, i) => {
      const pts = rows.filter((r) => r.I === size && r.K === K).sort((a, b) => a.rowsPerAdapter - b.rowsPerAdapter);
      if (pts.length === 0) return;
      const color = COLORS[i % COLORS.length];
      const d = pts.map((r, j) => `${j ? 'L' : 'M'}${xOf(r.rowsPerAdapter).toFixed(1)},${yOf(r.speedup).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2.5"/>`);
      for (const r of pts) {
        out.push(`<circle cx="${xOf(r.rowsPerAdapter).toFixed(1)}" cy="${yOf(r.speedup).toFixed(1)}" r="3.5" fill="${color}"/>`);
        out.push(`<text x="${(xOf(r.rowsPerAdapter) + 6).toFixed(1)}" y="${(yOf(r.speedup) - 6).toFixed(1)}" font-size="11" fill="${color}">${r.speedup.toFixed(2)}</text>`);
      }
    });
    out.push(`<text x="${pw / 2}" y="${ph + 36}" font-size="13" text-anchor="middle">rows per adapter (m, log)</text>`);
    if (ci === 0) out.push(`<text transform="translate(-52,${ph / 2}) rotate(-90)" font-size="13" text-anchor="middle">speed-up (one by one / one batch)</text>`);
    out.push(`</g>`);
  });
  out.push(`</svg>`);
  return out.join('\n') + '\n';
}
