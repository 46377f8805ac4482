// A minimal SVG line chart (log-scale or linear y, one polyline per series) for the benchmark results.
export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Linear y axis from 0 (e.g. rates that vary within one decade); default log scale. */
  linear?: boolean;
  series: { name: string; points: [number, number][] }[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

export function lineChart(c: Chart): string {
  const W = 640,
    H = 380,
    L = 70,
    R = 180,
    T = 40,
    B = 50;
  const pts = c.series.flatMap((s) => s.points);
  const xs = [...new Set(pts.map((p) => p[0]))].sort((a, b) => a - b);
  const ys = pts.map((p) => Math.max(p[1], 1e-3));
  const x = (v: number) => L + (xs.length < 2 ? 0 : (xs.indexOf(v) / (xs.length - 1)) * (W - L - R));
  let y: (v: number) => number;
  let ticks: number[];
  if (c.linear) {
    const top = niceCeil(Math.max(...ys, 1));
    ticks = Array.from({ length: 6 }, (_, k) => (top * k) / 5);
    y = (v) => T + (1 - v / top) * (H - T - B);
  } else {
    const lo = Math.floor(Math.log10(Math.min(...ys, 1)));
    const hi = Math.ceil(Math.log10(Math.max(...ys, 10)));
    ticks = Array.from({ length: hi - lo + 1 }, (_, k) => 10 ** (lo + k));
    y = (v) => T + (1 - (Math.log10(Math.max(v, 1e-3)) - lo) / Math.max(hi - lo, 1)) * (H - T - B);
  }
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(c.title)}</text>`,
  ];
  for (const t of ticks) {
    out.push(
      `<line x1="${L}" x2="${W - R}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${y(t) + 4}" text-anchor="end">${t >= 1 ? t.toLocaleString("en") : t}</text>`,
    );
  }
  for (const v of xs)
    out.push(`<text x="${x(v)}" y="${H - B + 18}" text-anchor="middle">${v.toLocaleString("en")}</text>`);
  out.push(
    `<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(c.xLabel)}</text>`,
    `<text x="16" y="${(T + H - B) / 2}" transform="rotate(-90 16 ${(T + H - B) / 2})" text-anchor="middle">${esc(c.yLabel)}</text>`,
  );
  c.series.forEach((s, i) => {
    const col = COLORS[i % COLORS.length];
    if (s.points.length)
      out.push(
        `<polyline fill="none" stroke="${col}" stroke-width="2" points="${s.points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ")}"/>`,
      );
    for (const p of s.points) out.push(`<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3" fill="${col}"/>`);
    out.push(
      `<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="12" fill="${col}"/>`,
      `<text x="${W - R + 30}" y="${T + i * 20 + 10}">${esc(s.name)}</text>`,
    );
  });
  out.push("</svg>\n");
  return out.join("\n");
}

/** The smallest 1, 2 or 5 × 10^k at or above v (the linear axis's top). */
export function niceCeil(v: number): number {
  const e = 10 ** Math.floor(Math.log10(v));
  return ([1, 2, 5, 10].find((m) => m * e >= v) ?? 10) * e;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
}
