// Charts, all drawn by uPlot on canvas: sparklines, time series with optional bands and markers.
// Colours come from the page's CSS variables, so charts follow the light or dark scheme.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Destroys charts whose element left the page (views re-render freely). */
const live = new Set<uPlot>();
function track(u: uPlot, el: HTMLElement): void {
  live.add(u);
  const observer = new ResizeObserver(() => {
    if (!el.isConnected) {
      observer.disconnect();
      live.delete(u);
      u.destroy();
      return;
    }
    const width = Math.max(el.clientWidth, 120);
    if (Math.abs(width - u.width) > 2) u.setSize({ width, height: u.height });
  });
  observer.observe(el);
}

export function destroyDetached(): void {
  for (const u of live) {
    if (!u.root.isConnected) {
      live.delete(u);
      u.destroy();
    }
  }
}

/** A 0-100 score sparkline, oldest first. */
export function sparkline(el: HTMLElement, values: number[], width = 120, height = 28): uPlot {
  const xs = values.map((_, i) => i);
  el.dataset.points = String(values.length);
  return new uPlot(
    {
      width,
      height,
      class: "spark",
      pxAlign: false,
      cursor: { show: false },
      legend: { show: false },
      select: { show: false, left: 0, top: 0, width: 0, height: 0 },
      scales: { x: { time: false }, y: { range: [0, 100] } },
      axes: [{ show: false }, { show: false }],
      series: [
        {},
        {
          stroke: cssVar("--accent"),
          width: 1.5,
          fill: cssVar("--accent-soft"),
          points: { show: values.length < 3, size: 3 },
        },
      ],
    },
    [xs, values],
    el,
  );
}

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
  width?: number;
  points?: boolean;
  /** Points only, no line. */
  scatter?: boolean;
  dash?: number[];
  /** Hidden line, used as a band edge. */
  hidden?: boolean;
  format?: (v: number) => string;
}

export interface TimeChartOptions {
  /** Seconds since the epoch, ascending. */
  x: number[];
  series: Series[];
  height?: number;
  yRange?: [number, number];
  /** A logarithmic y axis (durations that spike tenfold). */
  yLog?: boolean;
  yLabel?: string;
  yFormat?: (v: number) => string;
  /** Fill between two series (indices into `series`). */
  band?: { upper: number; lower: number; fill: string };
  /** Vertical dashed lines at these times (seconds), e.g. missed runs. */
  markers?: { at: number; color: string }[];
}

export function timeChart(el: HTMLElement, o: TimeChartOptions): uPlot {
  const width = Math.max(el.clientWidth, 280);
  const axis = cssVar("--muted");
  const grid = cssVar("--grid");
  const axisBase = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const series: uPlot.Series[] = [
    {},
    ...o.series.map((s): uPlot.Series => ({
      label: s.label,
      stroke: s.hidden ? "transparent" : s.color,
      width: s.hidden ? 0 : (s.width ?? 1.5),
      dash: s.dash,
      show: true,
      spanGaps: false,
      // Band edges keep their (invisible) paths: uPlot fills a band between them.
      paths: s.scatter ? () => null : undefined,
      points: s.hidden
        ? { show: false }
        : { show: s.scatter || s.points || o.x.length < 60, size: s.scatter ? 9 : 4, fill: s.color, stroke: s.color },
      value: (_u, v) => (v === null || v === undefined ? "—" : s.format ? s.format(v) : v.toFixed(1)),
    })),
  ];
  const bands: uPlot.Band[] = o.band ? [{ series: [o.band.upper + 1, o.band.lower + 1], fill: o.band.fill }] : [];
  const markers = o.markers ?? [];
  const u = new uPlot(
    {
      width,
      height: o.height ?? 240,
      series,
      bands,
      scales: { x: { time: true }, y: o.yRange ? { range: o.yRange } : o.yLog ? { distr: 3, log: 10 } : { auto: true } },
      axes: [
        { ...axisBase },
        {
          ...axisBase,
          label: o.yLabel,
          size: 60,
          values: o.yFormat ? (_u, splits) => splits.map((v) => (o.yLog && !oneTwoFive(v) ? "" : (o.yFormat as (v: number) => string)(v))) : undefined,
        },
      ],
      legend: { live: true },
      hooks: {
        draw: [
          (u) => {
            if (!markers.length) return;
            const ctx = u.ctx;
            ctx.save();
            ctx.setLineDash([4, 4]);
            ctx.lineWidth = 1.5 * devicePixelRatio;
            for (const m of markers) {
              const x = u.valToPos(m.at, "x", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.strokeStyle = m.color;
              ctx.beginPath();
              ctx.moveTo(x, u.bbox.top);
              ctx.lineTo(x, u.bbox.top + u.bbox.height);
              ctx.stroke();
            }
            ctx.restore();
          },
        ],
      },
    },
    [o.x, ...o.series.map((s) => s.values)] as uPlot.AlignedData,
    el,
  );
  el.dataset.points = String(o.x.length);
  track(u, el);
  return u;
}

/** 1, 2 or 5 times a power of ten: the labelled ticks of a log axis. */
function oneTwoFive(v: number): boolean {
  if (v <= 0) return false;
  const m = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
  return [1, 2, 5].some((x) => Math.abs(m - x) < 1e-6);
}

export function median(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median and the robust spread (1.4826 × median absolute deviation) of `values`. */
export function robust(values: number[]): { median: number; spread: number } {
  const m = median(values);
  return { median: m, spread: 1.4826 * median(values.map((v) => Math.abs(v - m))) };
}
