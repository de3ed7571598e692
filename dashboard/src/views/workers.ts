// The first screen: every worker with its health, last run, quality, 24 h success rate, a
// sparkline of its recent scores and its open anomalies. Sortable, filterable, live.

import { allPages, coalesce, executions, health, query } from "../api";
import type uPlot from "uplot";
import { sparkline } from "../charts";
import { fill, h } from "../dom";
import {
  ago,
  duration,
  healthBadge,
  levelBadge,
  levelName,
  num,
  outcomeBadge,
  percent,
  score,
  toMillis,
} from "../format";
import { WorkerHealth, type Execution, type Worker } from "../gen/runwarden/v1/query_service_pb";
import { load, type ViewContext } from "../ui";

/** Runs in a sparkline. */
const SPARK_RUNS = 30;

type SortKey = "name" | "health" | "last" | "level" | "success" | "anomalies";

interface State {
  workers: Map<string, Worker>;
  sparks: Map<string, number[]>;
  /** Duration of the latest run, from the sparkline's executions or the live stream. */
  lastDuration: Map<string, bigint>;
  sort: SortKey;
  desc: boolean;
  text: string;
  type: string;
  level: string;
}

// Kept across visits so coming back is instant and keeps the user's sort and filters.
const state: State = {
  workers: new Map(),
  sparks: new Map(),
  lastDuration: new Map(),
  sort: "health",
  desc: true,
  text: "",
  type: "",
  level: "",
};

const HEALTH_RANK: Record<number, number> = {
  [WorkerHealth.DOWN]: 5,
  [WorkerHealth.LATE]: 4,
  [WorkerHealth.NEW]: 2,
  [WorkerHealth.UP]: 1,
  [WorkerHealth.PAUSED]: 0,
};

export function workersView(ctx: ViewContext): void {
  const tbody = h("tbody");
  const count = h("span", { class: "muted" });
  const typeSelect = h("select", { "aria-label": "worker type", id: "filter-type" });
  const levelSelect = h("select", { "aria-label": "quality level", id: "filter-level" });
  const textInput = h("input", {
    type: "search",
    id: "filter-text",
    placeholder: "Filter by name or type",
    "aria-label": "filter by name or type",
    value: state.text,
  });
  const header = (key: SortKey, label: string, cls = "") =>
    h("th", { class: `sortable ${cls}`, "data-sort": key, scope: "col", onclick: () => sortBy(key) }, label);
  const table = h(
    "table",
    { class: "grid workers", id: "workers-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        header("name", "Worker"),
        header("health", "Health"),
        header("last", "Last run"),
        header("level", "Quality"),
        header("success", "Success 24 h", "num"),
        h("th", { scope: "col" }, `Last ${SPARK_RUNS} scores`),
        header("anomalies", "Open anomalies", "num"),
      ),
    ),
    tbody,
  );
  const body = h("div", { class: "table-wrap" }, table);
  const status = h("div", { class: "status" });
  fill(
    ctx.root,
    h(
      "div",
      { class: "toolbar" },
      h("h1", {}, "Workers"),
      count,
      h("div", { class: "filters" }, textInput, typeSelect, levelSelect),
    ),
    status,
    body,
  );

  textInput.addEventListener("input", () => {
    state.text = textInput.value;
    render();
  });
  typeSelect.addEventListener("change", () => {
    state.type = typeSelect.value;
    render();
  });
  levelSelect.addEventListener("change", () => {
    state.level = levelSelect.value;
    render();
  });

  function sortBy(key: SortKey) {
    if (state.sort === key) state.desc = !state.desc;
    else {
      state.sort = key;
      state.desc = key !== "name";
    }
    render();
  }

  function options(select: HTMLSelectElement, all: string, values: string[], current: string) {
    fill(select, h("option", { value: "" }, all), values.map((v) => h("option", { value: v, selected: v === current }, v)));
  }

  function matches(w: Worker): boolean {
    const t = state.text.trim().toLowerCase();
    if (t && !w.workerName.toLowerCase().includes(t) && !w.workerType.toLowerCase().includes(t)) return false;
    if (state.type && w.workerType !== state.type) return false;
    if (state.level && levelName(w.lastQualityLevel) !== state.level) return false;
    return true;
  }

  function sortValue(w: Worker): number | string {
    switch (state.sort) {
      case "name":
        return w.workerName;
      case "health":
        return HEALTH_RANK[w.health] ?? 0;
      case "last":
        return toMillis(w.lastRunStarted ?? w.lastSeen) ?? 0;
      case "level":
        return w.lastOverallScore;
      case "success":
        return w.successRate24h ?? -1;
      case "anomalies":
        return num(w.openAnomalies);
    }
  }

  function render() {
    const all = [...state.workers.values()];
    options(typeSelect, "All types", [...new Set(all.map((w) => w.workerType).filter(Boolean))].sort(), state.type);
    options(levelSelect, "All levels", ["EXCELLENT", "GOOD", "DEGRADED", "POOR", "FAILED"], state.level);
    const rows = all.filter(matches).sort((a, b) => {
      const x = sortValue(a);
      const y = sortValue(b);
      const c = x < y ? -1 : x > y ? 1 : a.workerName.localeCompare(b.workerName);
      return state.desc ? -c : c;
    });
    for (const th of table.querySelectorAll("th[data-sort]")) {
      const key = (th as HTMLElement).dataset.sort;
      th.setAttribute("aria-sort", key === state.sort ? (state.desc ? "descending" : "ascending") : "none");
    }
    count.textContent = `${rows.length} of ${all.length}`;
    if (!all.length) {
      fill(tbody, h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No worker has reported yet. Run `runwarden demo` for a first look, or submit a report.")));
      return;
    }
    fill(tbody, rows.map(row));
  }

  /** Sparklines drawn, by worker, reused while their values do not change. */
  const drawn = new Map<string, { el: HTMLElement; chart: uPlot; key: string }>();
  ctx.onLeave(() => {
    for (const d of drawn.values()) d.chart.destroy();
    drawn.clear();
  });

  function sparkFor(name: string): HTMLElement {
    const values = state.sparks.get(name) ?? [];
    const key = values.join(",");
    const existing = drawn.get(name);
    if (existing && existing.key === key) return existing.el;
    existing?.chart.destroy();
    drawn.delete(name);
    const el = h("div", { class: "spark-cell" });
    if (values.length) {
      // Drawn once the cell is in the page.
      requestAnimationFrame(() => {
        if (!el.isConnected || drawn.get(name)?.el === el) return;
        drawn.set(name, { el, chart: sparkline(el, values), key });
      });
    }
    return el;
  }

  function row(w: Worker): HTMLElement {
    const spark = sparkFor(w.workerName);
    const tr = h(
      "tr",
      { "data-worker": w.workerName, "data-type": w.workerType },
      h(
        "td",
        {},
        h("a", { href: `#/worker/${encodeURIComponent(w.workerName)}`, class: "worker-link" }, w.workerName),
        h("div", { class: "muted small" }, w.workerType || "—"),
      ),
      h("td", {}, healthBadge(w.health)),
      h(
        "td",
        { class: "last-run" },
        ago(w.lastRunStarted ?? w.lastSeen),
        " ",
        num(w.runCount) > 0 ? outcomeBadge(w.lastOutcome) : null,
        state.lastDuration.has(w.workerName) ? h("span", { class: "muted small" }, ` ${duration(state.lastDuration.get(w.workerName))}`) : null,
      ),
      h("td", {}, levelBadge(w.lastQualityLevel), num(w.runCount) > 0 ? h("span", { class: "score" }, score(w.lastOverallScore)) : null),
      h("td", { class: "num" }, percent(w.successRate24h), h("div", { class: "muted small" }, `${num(w.runs24h)} runs`)),
      h("td", {}, spark),
      h("td", { class: `num ${num(w.openAnomalies) > 0 ? "warn" : ""}`, "data-open-anomalies": num(w.openAnomalies) }, String(num(w.openAnomalies))),
    );
    return tr;
  }

  async function refresh() {
    const list = await allPages(async (pageToken) => {
      const r = await query.listWorkers({ limit: 1000, pageToken });
      return { items: r.workers, next: r.nextPageToken };
    });
    if (ctx.gone()) return;
    state.workers = new Map(list.map((w) => [w.workerName, w]));
    render();
    await loadSparks(list.filter((w) => !state.sparks.has(w.workerName)));
  }

  async function loadSparks(list: Worker[]) {
    const queue = [...list];
    const work = async () => {
      for (let w = queue.shift(); w; w = queue.shift()) {
        const r = await query.listExecutions({ workerName: w.workerName, limit: SPARK_RUNS });
        const runs = [...r.executions].reverse();
        state.sparks.set(w.workerName, runs.map((e) => e.scores?.overall ?? 0));
        const latest = r.executions[0]?.report?.durationMs;
        if (latest !== undefined) state.lastDuration.set(w.workerName, latest);
      }
    };
    await Promise.all([work(), work(), work(), work()]);
    if (!ctx.gone()) render();
  }

  const refreshSoon = coalesce(() => void refresh().catch(() => undefined), 1500);

  function onExecution(e: Execution) {
    const r = e.report;
    if (!r) return;
    const w = state.workers.get(r.workerName);
    if (w) {
      w.lastSeen = r.completedAt;
      w.lastRunStarted = r.startedAt;
      w.lastOutcome = r.outcome;
      w.lastOverallScore = e.scores?.overall ?? 0;
      w.lastQualityLevel = e.qualityLevel;
      w.runCount = w.runCount + 1n;
      if (w.health === WorkerHealth.NEW) w.health = WorkerHealth.UP;
    }
    const spark = state.sparks.get(r.workerName) ?? [];
    spark.push(e.scores?.overall ?? 0);
    state.sparks.set(r.workerName, spark.slice(-SPARK_RUNS));
    if (r.durationMs !== undefined) state.lastDuration.set(r.workerName, r.durationMs);
    render();
    // Success rate, open anomalies and new workers come from the server.
    refreshSoon();
  }

  ctx.onLeave(executions.subscribe(onExecution));
  ctx.onLeave(
    health.subscribe((ev) => {
      if (ev.event.case !== "workerHealth") return;
      const w = state.workers.get(ev.event.value.workerName);
      if (w) {
        w.health = ev.event.value.current;
        render();
      }
      refreshSoon();
    }),
  );

  if (state.workers.size) render();
  void load(ctx, status, refresh);
  // Ages ("3 min ago") stay true while the page is open.
  const ticker = setInterval(() => state.workers.size && render(), 30_000);
  ctx.onLeave(() => clearInterval(ticker));
}
