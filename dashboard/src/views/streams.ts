// The stream guardian, live from WatchHealth: the latest tick's counts, warnings when thresholds
// are crossed, orphans by type, a chart of the last hours of ticks (the guardian reports every
// tick as a run of `sse_guardian`, whose custom metrics carry the counts), and worker health
// changes as they happen.

import type { JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { allPages, guardian, health, query } from "../api";
import { cssVar, timeChart } from "../charts";
import { fill, h } from "../dom";
import { ago, count, healthBadge, num, percent, time, toMillis } from "../format";
import type { GuardianStatus, WorkerHealthChange } from "../gen/runwarden/v1/guardian_service_pb";
import { load, section, stat, type ViewContext } from "../ui";

const GUARDIAN_WORKER = "sse_guardian";
const HOURS = [1, 6, 24];
let chosenHours = 6;

interface Tick {
  at: number; // seconds
  active: number;
  healthy: number;
  stale: number;
  orphaned: number;
  rate: number;
}

/** Health changes seen while the page is open, newest first. */
const changes: WorkerHealthChange[] = [];

export function streamsView(ctx: ViewContext): void {
  const status = h("div", { class: "status" });
  const warnings = h("div", { id: "guardian-warnings" });
  const cards = h("div", { class: "stats", id: "guardian-stats" });
  const byType = h("div", { id: "orphaned-by-type" });
  const picker = h("div", { class: "seg", role: "group", "aria-label": "hours" });
  const chart = h("div", { class: "chart", id: "guardian-chart" });
  const feed = h("div", { id: "health-changes" });
  fill(
    ctx.root,
    h("div", { class: "toolbar" }, h("h1", {}, "Streams"), h("span", { class: "muted", id: "tick-at" })),
    status,
    warnings,
    cards,
    section("Ticks", h("div", { class: "toolbar" }, h("span", { class: "muted small" }, "Streams per guardian tick."), picker), chart),
    h("div", { class: "two-col" }, section("Orphaned by type", byType), section("Worker health changes (live)", feed)),
  );

  let ticks: Tick[] = [];

  function drawStatus(s: GuardianStatus) {
    const tickAt = ctx.root.querySelector("#tick-at");
    if (tickAt) {
      fill(tickAt, s.at ? ["last tick ", ago(s.at)] : "no tick yet");
      (tickAt as HTMLElement).dataset.at = s.at ? String(toMillis(s.at)) : "";
    }
    fill(
      warnings,
      s.warnings.map((w) =>
        h("div", { class: "banner warn", role: "alert", "data-warning": w.kind }, h("strong", {}, w.kind.replaceAll("_", " ").toLowerCase()), ": ", w.message),
      ),
    );
    fill(
      cards,
      stat("Active", count(s.activeStreams)),
      stat("Healthy", count(s.healthyStreams)),
      stat("Stale", count(s.staleStreams)),
      stat("Orphaned", count(s.orphanedStreams)),
      stat("Cleaned (last tick)", count(s.cleanedStreams)),
      stat("Orphan rate", percent(s.orphanRate, 1)),
      stat("Tick took", `${s.tickDurationMs.toFixed(1)} ms`),
    );
    const types = Object.entries(s.orphanedByType).sort((a, b) => Number(b[1] - a[1]));
    fill(
      byType,
      types.length
        ? h(
            "table",
            { class: "grid compact" },
            h("thead", {}, h("tr", {}, h("th", {}, "Stream type"), h("th", { class: "num" }, "Orphaned"))),
            h("tbody", {}, types.map(([t, n]) => h("tr", {}, h("td", {}, t), h("td", { class: "num" }, count(n))))),
          )
        : h("p", { class: "muted" }, "No orphaned streams."),
    );
  }

  function drawChart() {
    chart.replaceChildren();
    fill(
      picker,
      HOURS.map((n) =>
        h(
          "button",
          {
            type: "button",
            class: n === chosenHours ? "on" : "",
            "aria-pressed": n === chosenHours,
            onclick: () => {
              chosenHours = n;
              void load(ctx, status, refresh);
            },
          },
          `${n} h`,
        ),
      ),
    );
    if (!ticks.length) {
      chart.append(h("p", { class: "empty" }, "No guardian tick in this period."));
      return;
    }
    timeChart(chart, {
      x: ticks.map((t) => t.at),
      yLabel: "streams",
      yFormat: (v) => String(Math.round(v)),
      series: [
        { label: "active", values: ticks.map((t) => t.active), color: cssVar("--accent"), width: 2, format: (v) => String(v) },
        { label: "healthy", values: ticks.map((t) => t.healthy), color: cssVar("--good"), format: (v) => String(v) },
        { label: "stale", values: ticks.map((t) => t.stale), color: cssVar("--warn"), format: (v) => String(v) },
        { label: "orphaned", values: ticks.map((t) => t.orphaned), color: cssVar("--bad"), format: (v) => String(v) },
      ],
    });
  }

  function drawFeed() {
    fill(
      feed,
      changes.length
        ? h(
            "ul",
            { class: "feed" },
            changes.slice(0, 50).map((c) =>
              h("li", {}, time(c.at), " ", h("a", { href: `#/worker/${encodeURIComponent(c.workerName)}` }, c.workerName), " ", healthBadge(c.previous), " → ", healthBadge(c.current)),
            ),
          )
        : h("p", { class: "muted" }, "None since this page was opened."),
    );
  }

  async function refresh() {
    const since = timestampFromDate(new Date(Date.now() - chosenHours * 3600_000));
    const [s, runs] = await Promise.all([
      guardian.getGuardianStatus({}),
      allPages(async (pageToken) => {
        const r = await query.listExecutions({ workerName: GUARDIAN_WORKER, since, limit: 500, pageToken });
        return { items: r.executions, next: r.nextPageToken };
      }, 20),
    ]);
    if (ctx.gone()) return;
    ticks = runs
      .map((e) => tickOf(toMillis(e.report?.startedAt), e.report?.customMetrics))
      .filter((t): t is Tick => t !== undefined)
      .reverse();
    drawStatus(s);
    drawChart();
    drawFeed();
  }

  ctx.onLeave(
    health.subscribe((ev) => {
      if (ev.event.case === "guardian") {
        const s = ev.event.value;
        drawStatus(s);
        const at = toMillis(s.at);
        if (at !== undefined && (!ticks.length || at / 1000 > ticks[ticks.length - 1].at)) {
          ticks.push({
            at: at / 1000,
            active: num(s.activeStreams),
            healthy: num(s.healthyStreams),
            stale: num(s.staleStreams),
            orphaned: num(s.orphanedStreams),
            rate: s.orphanRate,
          });
          const horizon = Date.now() / 1000 - chosenHours * 3600;
          ticks = ticks.filter((t) => t.at >= horizon);
          drawChart();
        }
      } else if (ev.event.case === "workerHealth") {
        changes.unshift(ev.event.value);
        drawFeed();
      }
    }),
  );
  void load(ctx, status, refresh);
}

function tickOf(atMs: number | undefined, m: JsonObject | undefined): Tick | undefined {
  if (atMs === undefined || !m || typeof m.active_streams !== "number") return undefined;
  const n = (k: string) => (typeof m[k] === "number" ? (m[k] as number) : 0);
  return {
    at: atMs / 1000,
    active: n("active_streams"),
    healthy: n("healthy_streams"),
    stale: n("stale_streams"),
    orphaned: n("orphaned_streams"),
    rate: n("orphan_rate"),
  };
}
