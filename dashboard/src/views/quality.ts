// Data quality across all workers over a window: the overall level, then every worker's quality,
// validation failures and rate-limit incidents, worst first (the server's order).

import { coalesce, executions, query } from "../api";
import { fill, h } from "../dom";
import { count, duration, levelBadge, num, score } from "../format";
import { StatsWindow, type DataQualitySummary } from "../gen/runwarden/v1/query_service_pb";
import { load, section, stat, windowPicker, type ViewContext } from "../ui";

let chosenWindow: StatsWindow = StatsWindow.STATS_WINDOW_7D;

export function qualityView(ctx: ViewContext): void {
  const status = h("div", { class: "status" });
  const picker = h("div");
  const summary = h("div", { class: "stats" });
  const table = h("div", { id: "quality-table" });
  fill(
    ctx.root,
    h("div", { class: "toolbar" }, h("h1", {}, "Data quality"), picker),
    status,
    summary,
    section("Workers, worst first", table),
  );

  async function refresh() {
    const s = await query.getDataQualitySummary({ window: chosenWindow });
    if (ctx.gone()) return;
    fill(
      picker,
      windowPicker(
        chosenWindow,
        (w) => {
          chosenWindow = w;
          void load(ctx, status, refresh);
        },
        [StatsWindow.STATS_WINDOW_24H, StatsWindow.STATS_WINDOW_7D, StatsWindow.STATS_WINDOW_30D, StatsWindow.STATS_WINDOW_90D],
      ),
    );
    draw(s);
  }

  function draw(s: DataQualitySummary) {
    fill(
      summary,
      stat("Overall level", levelBadge(s.overallQualityLevel)),
      stat("Mean data-quality score", score(s.overallDataQualityScore)),
      stat("Runs", count(s.totalExecutions)),
      stat("Records processed", count(s.totalRecordsProcessed)),
      stat("Validation failures", count(s.totalValidationFailures)),
      stat("Rate-limit incidents", count(s.rateLimitIncidents), "runs that reported api_rate_limited"),
    );
    if (!s.workers.length) {
      fill(table, h("p", { class: "empty" }, "No runs in this window."));
      return;
    }
    fill(
      table,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid quality" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Worker", "Level", "Mean data quality", "Runs", "Validation failures", "Records failed", "Missing fields", "Stalest data", "Rate-limited runs"].map((t, i) =>
                h("th", { scope: "col", class: i > 1 ? "num" : "" }, t),
              ),
            ),
          ),
          h(
            "tbody",
            {},
            s.workers.map((w) =>
              h(
                "tr",
                { "data-worker": w.workerName },
                h("td", {}, h("a", { href: `#/worker/${encodeURIComponent(w.workerName)}` }, w.workerName)),
                h("td", {}, levelBadge(w.qualityLevel)),
                h("td", { class: "num" }, h("span", { class: "bar", style: `--v:${w.meanDataQualityScore.toFixed(0)}` }), score(w.meanDataQualityScore)),
                h("td", { class: "num" }, count(w.runs)),
                h("td", { class: `num ${num(w.validationFailures) ? "warn" : ""}` }, count(w.validationFailures)),
                h("td", { class: "num" }, count(w.recordsFailed)),
                h("td", { class: "num" }, count(w.missingFields)),
                h("td", { class: "num" }, w.stalestNewestRecordAgeSeconds !== undefined ? duration(w.stalestNewestRecordAgeSeconds * 1000) : "—"),
                h("td", { class: `num ${num(w.rateLimitedRuns) ? "warn" : ""}` }, count(w.rateLimitedRuns)),
              ),
            ),
          ),
        ),
      ),
    );
  }

  const refreshSoon = coalesce(() => void load(ctx, status, refresh), 3000);
  ctx.onLeave(executions.subscribe(() => refreshSoon()));
  void load(ctx, status, refresh);
}
