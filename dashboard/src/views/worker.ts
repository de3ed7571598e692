// One worker: its settings and health, statistics over a chosen window, the score trend, the
// duration chart with its baseline band and anomalies, the data-quality heatmap, the latest
// executions (expandable to every metric), and what runwarden learned about it.

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { allPages, coalesce, executions, query } from "../api";
import { cssVar, robust, timeChart } from "../charts";
import { append, fill, h } from "../dom";
import {
  WEEKDAYS,
  ago,
  count,
  duration,
  healthBadge,
  levelBadge,
  num,
  outcomeBadge,
  percent,
  score,
  time,
  toMillis,
  utcHour,
} from "../format";
import { type ExecutionReport } from "../gen/runwarden/v1/report_pb";
import {
  AnomalyKind,
  StatsWindow,
  type Anomaly,
  type Execution,
  type SlotPerformance,
  type Trend,
  type Worker,
  type WorkerLearning,
  type WorkerStats,
} from "../gen/runwarden/v1/query_service_pb";
import { load, section, stat, windowPicker, windowSeconds, type ViewContext } from "../ui";

/** Most runs drawn on the charts (newest kept). */
const MAX_RUNS = 3000;
/** Runs behind each point's baseline, as the anomaly detector uses. */
const BASELINE_RUNS = 30;
/** The band's half-width in robust standard deviations. */
const BAND_K = 3;

let chosenWindow: StatsWindow = StatsWindow.STATS_WINDOW_7D;

export function workerView(ctx: ViewContext, name: string): void {
  const status = h("div", { class: "status" });
  const head = h("div", { class: "worker-head" });
  const picker = h("div");
  const stats = h("div", { class: "stats" });
  const scoreChart = h("div", { class: "chart", id: "score-chart" });
  const durationChart = h("div", { class: "chart", id: "duration-chart" });
  const heatmap = h("div", { class: "heatmap-wrap", id: "heatmap" });
  const latest = h("div", { id: "latest-executions" });
  const learning = h("div", { id: "learning" });
  fill(
    ctx.root,
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "Workers"), " / ", name),
    status,
    head,
    h("div", { class: "toolbar" }, h("h2", {}, "Window"), picker),
    stats,
    section("Score trend", h("p", { class: "muted small" }, "Each run's overall score and the four scores it is made of."), scoreChart),
    section(
      "Duration",
      h(
        "p",
        { class: "muted small" },
        `Each run's duration; the band is the median of the previous ${BASELINE_RUNS} runs ± ${BAND_K} robust σ (1.4826 × MAD). Log scale. Red points: duration anomalies; amber points: runs with another anomaly; dashed red lines: missed runs.`,
      ),
      durationChart,
    ),
    section(
      "Data quality by hour and weekday",
      h("p", { class: "muted small" }, "Mean data-quality score of the runs that started in each hour of each weekday, in your local time."),
      heatmap,
    ),
    section("Latest executions", latest),
    section("Learning", learning),
  );

  let runs: Execution[] = [];
  let anomalies: Anomaly[] = [];

  async function refresh() {
    const since = timestampFromDate(new Date(Date.now() - windowSeconds(chosenWindow) * 1000));
    const [worker, st, learned, listed, found] = await Promise.all([
      query.getWorker({ workerName: name }),
      query.getWorkerStats({ workerName: name, window: chosenWindow }),
      query.getWorkerLearning({ workerName: name, window: chosenWindow }),
      allPages(async (pageToken) => {
        const r = await query.listExecutions({ workerName: name, since, limit: 500, pageToken });
        return { items: r.executions, next: r.nextPageToken };
      }, Math.ceil(MAX_RUNS / 500)),
      query.listAnomalies({ workerName: name, since, limit: 1000 }),
    ]);
    if (ctx.gone()) return;
    runs = listed.slice().reverse();
    anomalies = found.anomalies;
    drawHead(worker);
    fill(picker, windowPicker(chosenWindow, (w) => {
      chosenWindow = w;
      void load(ctx, status, refresh);
    }));
    drawStats(st);
    drawCharts();
    drawHeatmap();
    drawLatest(listed.slice(0, 20));
    drawLearning(learned);
  }

  function drawHead(w: Worker) {
    const sched = w.schedule;
    const schedule = sched
      ? sched.cron
        ? `cron "${sched.cron}" (UTC)`
        : `every ${duration(num(sched.intervalSeconds) * 1000)}`
      : "no schedule";
    fill(
      head,
      h(
        "div",
        { class: "title-row" },
        h("h1", {}, w.workerName),
        healthBadge(w.health),
        levelBadge(w.lastQualityLevel),
        w.paused ? h("span", { class: "badge health-paused" }, "paused") : null,
      ),
      h(
        "dl",
        { class: "facts" },
        fact("Type", w.workerType || "—"),
        fact("Schedule", `${schedule}${sched ? `, grace ${duration(num(sched.graceSeconds) * 1000)}` : ""}${sched?.inferred ? " (inferred)" : ""}`),
        fact("Next deadline", w.nextDeadline ? time(w.nextDeadline) : "—"),
        fact("Last run", ago(w.lastRunStarted ?? w.lastSeen)),
        fact("Runs", count(w.runCount)),
        fact("First seen", time(w.firstSeen)),
        fact("Open anomalies", String(num(w.openAnomalies))),
        w.owner ? fact("Owner", w.owner) : null,
        w.description ? fact("Description", w.description) : null,
        Object.keys(w.labels).length
          ? fact("Labels", Object.entries(w.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)))
          : null,
      ),
    );
  }

  function drawStats(s: WorkerStats) {
    fill(
      stats,
      stat("Runs", count(s.totalExecutions)),
      stat("Success rate", percent(s.successRate, 1)),
      stat("Failed", count(s.failedExecutions + s.timedOutExecutions)),
      stat("p50 duration", duration(s.p50DurationMs)),
      stat("p95 duration", duration(s.p95DurationMs)),
      stat("Mean overall", score(s.averageScores?.overall)),
      stat("Mean data quality", score(s.averageScores?.dataQuality)),
      stat("Level (last 10)", levelBadge(s.qualityLevel)),
    );
  }

  function drawCharts() {
    for (const el of [scoreChart, durationChart]) el.replaceChildren();
    if (!runs.length) {
      scoreChart.append(h("p", { class: "empty" }, "No runs in this window."));
      durationChart.append(h("p", { class: "empty" }, "No runs in this window."));
      return;
    }
    const x = runs.map((e) => (toMillis(e.report?.startedAt) ?? 0) / 1000);
    const sc = (f: (e: Execution) => number | undefined) => runs.map((e) => f(e) ?? null);
    timeChart(scoreChart, {
      x,
      yRange: [0, 100],
      yLabel: "score",
      series: [
        { label: "overall", values: sc((e) => e.scores?.overall), color: cssVar("--accent"), width: 2 },
        { label: "reliability", values: sc((e) => e.scores?.reliability), color: cssVar("--c2"), width: 1 },
        { label: "performance", values: sc((e) => e.scores?.performance), color: cssVar("--c3"), width: 1 },
        { label: "data quality", values: sc((e) => e.scores?.dataQuality), color: cssVar("--c4"), width: 1 },
        { label: "resources", values: sc((e) => e.scores?.resourceEfficiency), color: cssVar("--c5"), width: 1 },
      ],
    });

    const durations = runs.map((e) => num(e.report?.durationMs));
    const lower: (number | null)[] = [];
    const middle: (number | null)[] = [];
    const upper: (number | null)[] = [];
    durations.forEach((_, i) => {
      const previous = durations.slice(Math.max(0, i - BASELINE_RUNS), i);
      if (previous.length < 5) {
        lower.push(null);
        middle.push(null);
        upper.push(null);
        return;
      }
      const b = robust(previous);
      middle.push(b.median);
      // A log axis cannot show zero: the band's floor is a tenth of the median.
      lower.push(Math.max(b.median / 10, b.median - BAND_K * b.spread));
      upper.push(b.median + BAND_K * b.spread);
    });
    const byExecution = new Map<string, Anomaly[]>();
    for (const a of anomalies) {
      if (a.executionId) byExecution.set(a.executionId, [...(byExecution.get(a.executionId) ?? []), a]);
    }
    const isDuration = (a: Anomaly) => a.kind === AnomalyKind.DURATION_SPIKE || a.kind === AnomalyKind.DURATION_DROP;
    const marked = runs.map((e, i) => (byExecution.get(e.executionId)?.some(isDuration) ? durations[i] : null));
    const other = runs.map((e, i) => (byExecution.get(e.executionId)?.some((a) => !isDuration(a)) ? durations[i] : null));
    durationChart.dataset.anomalies = String(runs.filter((e) => byExecution.has(e.executionId)).length);
    timeChart(durationChart, {
      x,
      yLabel: "duration (log)",
      yLog: true,
      yFormat: (v) => duration(v),
      band: { upper: 2, lower: 3, fill: cssVar("--band") },
      series: [
        { label: "duration", values: durations.map((v) => Math.max(v, 1)), color: cssVar("--accent"), points: true, format: duration },
        { label: "baseline median", values: middle, color: cssVar("--muted"), dash: [5, 5], width: 1, format: duration },
        { label: "band upper", values: upper, color: cssVar("--muted"), hidden: true, format: duration },
        { label: "band lower", values: lower, color: cssVar("--muted"), hidden: true, format: duration },
        { label: "duration anomaly", values: marked, color: cssVar("--bad"), scatter: true, format: duration },
        { label: "other anomaly", values: other, color: cssVar("--warn"), scatter: true, format: duration },
      ],
      markers: anomalies
        .filter((a) => a.kind === AnomalyKind.MISSED_RUN)
        .map((a) => ({ at: (toMillis(a.openedAt) ?? 0) / 1000, color: cssVar("--bad") })),
    });
  }

  function drawHeatmap() {
    const cells = Array.from({ length: 7 * 24 }, () => ({ runs: 0, sum: 0, failures: 0 }));
    for (const e of runs) {
      const ms = toMillis(e.report?.startedAt);
      if (ms === undefined) continue;
      const d = new Date(ms);
      const day = (d.getDay() + 6) % 7; // Monday first
      const cell = cells[day * 24 + d.getHours()];
      cell.runs += 1;
      cell.sum += e.scores?.dataQuality ?? 0;
      cell.failures += num(e.report?.dataVerification?.validationChecksFailed);
    }
    const grid = h("div", { class: "heatmap", role: "grid", "aria-label": "data quality by hour and weekday" });
    grid.append(h("div", { class: "hm-corner" }));
    for (let hour = 0; hour < 24; hour++) grid.append(h("div", { class: "hm-hour" }, hour % 3 === 0 ? String(hour) : ""));
    for (let day = 0; day < 7; day++) {
      grid.append(h("div", { class: "hm-day" }, WEEKDAYS[day]));
      for (let hour = 0; hour < 24; hour++) {
        const c = cells[day * 24 + hour];
        const mean = c.runs ? c.sum / c.runs : undefined;
        grid.append(
          h("div", {
            class: `hm-cell ${mean === undefined ? "hm-empty" : ""}`,
            role: "gridcell",
            "data-runs": c.runs,
            style: mean === undefined ? undefined : `background:${qualityColour(mean)}`,
            title:
              mean === undefined
                ? `${WEEKDAYS[day]} ${hour}:00–${hour + 1}:00: no runs`
                : `${WEEKDAYS[day]} ${hour}:00–${hour + 1}:00 (local): ${c.runs} run${c.runs === 1 ? "" : "s"}, mean data quality ${mean.toFixed(1)}, ${c.failures} validation failure${c.failures === 1 ? "" : "s"}`,
          }),
        );
      }
    }
    fill(
      heatmap,
      grid,
      h(
        "div",
        { class: "hm-legend muted small" },
        "0",
        h("span", { class: "hm-scale" }),
        "100 · empty cells: no runs",
      ),
    );
  }

  function drawLatest(list: Execution[]) {
    if (!list.length) {
      fill(latest, h("p", { class: "empty" }, "No runs in this window."));
      return;
    }
    const tbody = h("tbody");
    for (const e of list) appendExecutionRows(tbody, e, false);
    fill(
      latest,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid executions" },
          h("thead", {}, h("tr", {}, ["Started", "Outcome", "Duration", "Quality", "Overall", "Records", ""].map((t) => h("th", { scope: "col" }, t)))),
          tbody,
        ),
      ),
    );
  }

  function drawLearning(l: WorkerLearning) {
    const trend = (t: Trend | undefined, unit: (v: number) => string) =>
      t ? `${t.direction || "STABLE"} (${t.slopePerDay >= 0 ? "+" : ""}${unit(t.slopePerDay)} per day over ${num(t.samples)} days)` : "—";
    const slots = (list: SlotPerformance[], label: (s: number) => string) =>
      list.length
        ? h(
            "table",
            { class: "grid compact" },
            h("thead", {}, h("tr", {}, ["Slot", "Runs", "Mean score", "Mean duration", "Success"].map((t) => h("th", {}, t)))),
            h(
              "tbody",
              {},
              list.map((s) =>
                h("tr", {}, h("td", {}, label(s.slot)), h("td", { class: "num" }, count(s.runs)), h("td", { class: "num" }, score(s.meanOverallScore)), h("td", { class: "num" }, duration(s.meanDurationMs)), h("td", { class: "num" }, percent(s.successRate))),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No data.");
    const inferred = l.inferredSchedule;
    fill(
      learning,
      h(
        "dl",
        { class: "facts" },
        fact("Best hour", l.optimalHour !== undefined ? utcHour(l.optimalHour) : "not enough data", l.optimalHourNote),
        fact("Best weekday", l.optimalDay !== undefined ? WEEKDAYS[l.optimalDay] : "not enough data", l.optimalDayNote),
        fact("Records per run", trend(l.dataVolumeTrend, (v) => v.toFixed(1))),
        fact("Duration", trend(l.durationTrend, (v) => duration(Math.abs(v)))),
        fact(
          "Inferred schedule",
          inferred && (inferred.cron || num(inferred.intervalSeconds))
            ? inferred.cron || `every ${duration(num(inferred.intervalSeconds) * 1000)}`
            : "irregular or too few runs",
        ),
        fact("Runs analysed", `${count(l.runs)} (min ${num(l.minSamples)} per slot)`),
      ),
      h("h3", {}, "Recommendations"),
      l.recommendations.length
        ? h(
            "ul",
            { class: "recommendations" },
            l.recommendations.map((r) =>
              h("li", {}, h("span", { class: "chip" }, r.kind), " ", h("strong", {}, r.message), h("div", { class: "muted small evidence" }, r.evidence)),
            ),
          )
        : h("p", { class: "muted" }, "None: nothing to change."),
      h(
        "details",
        {},
        h("summary", {}, "Hourly and weekday breakdowns"),
        h("div", { class: "two-col" }, h("div", {}, h("h4", {}, "By hour (UTC)"), slots(l.hourlyPerformance, (s) => `${String(s).padStart(2, "0")}:00`)), h("div", {}, h("h4", {}, "By weekday"), slots(l.weekdayPerformance, (s) => WEEKDAYS[s] ?? String(s)))),
      ),
    );
  }

  const refreshSoon = coalesce(() => void load(ctx, status, refresh), 1500);
  ctx.onLeave(
    executions.subscribe((e) => {
      if (e.report?.workerName !== name) return;
      refreshSoon();
    }),
  );
  void load(ctx, status, refresh);
}

function fact(label: string, value: Node | string | (Node | string)[], title?: string): HTMLElement[] {
  return [h("dt", {}, label), h("dd", { title }, ...(Array.isArray(value) ? value : [value]))];
}

/** Colour stops of the heatmap: [score, hue, lightness %]; most of the range goes to 50-100. */
const QUALITY_STOPS: [number, number, number][] = [
  [0, 0, 42],
  [50, 28, 48],
  [70, 48, 48],
  [90, 85, 42],
  [100, 140, 34],
];

/** Red (0) through amber (50-70) to green (100), readable on both schemes. */
export function qualityColour(score: number): string {
  const s = Math.max(0, Math.min(100, score));
  let i = 1;
  while (i < QUALITY_STOPS.length - 1 && s > QUALITY_STOPS[i][0]) i++;
  const [s0, h0, l0] = QUALITY_STOPS[i - 1];
  const [s1, h1, l1] = QUALITY_STOPS[i];
  const t = (s - s0) / (s1 - s0);
  return `hsl(${(h0 + t * (h1 - h0)).toFixed(0)} 70% ${(l0 + t * (l1 - l0)).toFixed(0)}%)`;
}

/** A run as a table row, and (on click) a second row with every metric. */
function appendExecutionRows(tbody: HTMLElement, e: Execution, open: boolean): void {
  const r = e.report;
  const d = r?.dataVerification;
  const detail = h("tr", { class: "detail", hidden: !open }, h("td", { colspan: 7 }, executionDetail(e)));
  const row = h(
    "tr",
    { class: "expandable", tabindex: 0, "data-execution": e.executionId, "aria-expanded": open },
    h("td", {}, time(r?.startedAt)),
    h("td", {}, r ? outcomeBadge(r.outcome) : "—"),
    h("td", { class: "num" }, duration(r?.durationMs)),
    h("td", {}, levelBadge(e.qualityLevel)),
    h("td", { class: "num" }, score(e.scores?.overall)),
    h("td", { class: "num" }, d ? `${count(d.recordsProcessed)} / ${count(d.recordsFetched)}` : "—"),
    h("td", { class: "chevron" }, "▸"),
  );
  const toggle = () => {
    detail.hidden = !detail.hidden;
    row.setAttribute("aria-expanded", String(!detail.hidden));
  };
  row.addEventListener("click", toggle);
  row.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      toggle();
    }
  });
  tbody.append(row, detail);
}

function kv(title: string, entries: [string, unknown][]): HTMLElement | null {
  const shown = entries.filter(([, v]) => v !== undefined && v !== "" && !(Array.isArray(v) && !v.length));
  if (!shown.length) return null;
  return h(
    "div",
    { class: "kv" },
    h("h4", {}, title),
    h(
      "dl",
      {},
      shown.map(([k, v]) => [
        h("dt", {}, k),
        h("dd", {}, Array.isArray(v) ? v.join(", ") : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)),
      ]),
    ),
  );
}

function executionDetail(e: Execution): HTMLElement {
  const r: ExecutionReport | undefined = e.report;
  const d = r?.dataVerification;
  const res = r?.resourceMetrics;
  const dep = r?.dependencyMetrics;
  const l = e.learning;
  const reasons = e.reasons;
  const box = h("div", { class: "execution-detail" });
  append(box, [
    h(
      "div",
      { class: "kv-row" },
      h("span", { class: "muted small" }, `execution ${e.executionId}`),
      r?.errorMessage ? h("div", { class: "error-message" }, r.errorMessage) : null,
    ),
    h(
      "div",
      { class: "kv-grid" },
      kv("Scores", [
        ["overall", score(e.scores?.overall)],
        ["reliability", score(e.scores?.reliability)],
        ["performance", score(e.scores?.performance)],
        ["data quality", score(e.scores?.dataQuality)],
        ["resource efficiency", score(e.scores?.resourceEfficiency)],
      ]),
      kv("Score reasons", [
        ["reliability", reasons?.reliability],
        ["performance", reasons?.performance],
        ["data quality", reasons?.dataQuality],
        ["resource efficiency", reasons?.resourceEfficiency],
      ]) ?? h("div", { class: "kv" }, h("h4", {}, "Score reasons"), h("p", { class: "muted" }, "No points lost.")),
      d &&
        kv("Data verification", [
          ["records fetched", count(d.recordsFetched)],
          ["processed", count(d.recordsProcessed)],
          ["stored", count(d.recordsStored)],
          ["failed", count(d.recordsFailed)],
          ["skipped", count(d.recordsSkipped)],
          ["newest record age", d.newestRecordAgeSeconds !== undefined ? duration(d.newestRecordAgeSeconds * 1000) : undefined],
          ["oldest record age", d.oldestRecordAgeSeconds !== undefined ? duration(d.oldestRecordAgeSeconds * 1000) : undefined],
          ["avg record age", d.avgRecordAgeSeconds !== undefined ? duration(d.avgRecordAgeSeconds * 1000) : undefined],
          ["expected fields present", d.expectedFieldsPresent],
          ["missing fields", d.missingFields],
          ["null field counts", Object.keys(d.nullFieldCounts).length ? Object.entries(d.nullFieldCounts).map(([k, v]) => `${k}: ${v}`) : undefined],
          ["validations passed", count(d.validationChecksPassed)],
          ["validations failed", count(d.validationChecksFailed)],
          ["validation errors", d.validationErrors],
          ["API calls", `${count(d.apiCallsMade)} made, ${count(d.apiCallsSucceeded)} ok, ${count(d.apiCallsFailed)} failed`],
          ["rate limited", d.apiRateLimited ? "yes" : undefined],
          ["API quota remaining", d.apiQuotaRemaining !== undefined ? count(d.apiQuotaRemaining) : undefined],
          ["cache", `${count(d.cacheHits)} hits, ${count(d.cacheMisses)} misses, ${count(d.cacheWrites)} writes`],
          ["cache TTL", d.cacheTtlSeconds !== undefined ? `${count(d.cacheTtlSeconds)} s` : undefined],
        ]),
      res &&
        kv("Resources", [
          ["memory peak", res.memoryPeakMb !== undefined ? `${res.memoryPeakMb.toFixed(1)} MB` : undefined],
          ["CPU avg", res.cpuPercentAvg !== undefined ? `${res.cpuPercentAvg.toFixed(1)} %` : undefined],
          ["network received", `${count(res.networkBytesReceived)} B`],
          ["DB queries", count(res.databaseQueryCount)],
          ["Redis operations", count(res.redisOperations)],
        ]),
      dep &&
        kv("Dependencies", [
          ["upstream data age", dep.upstreamDataAgeSeconds !== undefined ? duration(dep.upstreamDataAgeSeconds * 1000) : undefined],
          ["downstream consumers waiting", count(dep.downstreamConsumersWaiting)],
        ]),
      l &&
        kv("Learning", [
          ["hour (UTC)", l.timeOfDayUtc],
          ["weekday", WEEKDAYS[l.dayOfWeek]],
          ["run of the day", count(l.executionNumberToday)],
          ["since last run", l.timeSinceLastRunSeconds !== undefined ? duration(l.timeSinceLastRunSeconds * 1000) : undefined],
          ["duration vs average", l.durationVsAvg !== undefined ? `${l.durationVsAvg.toFixed(2)}×` : undefined],
        ]),
      r?.customMetrics
        ? h(
            "div",
            { class: "kv" },
            h("h4", {}, "Custom metrics"),
            h("pre", { class: "custom-metrics" }, JSON.stringify(r.customMetrics, null, 2)),
          )
        : null,
    ),
  ]);
  return box;
}
