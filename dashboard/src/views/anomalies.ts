// Open and recent anomalies with their evidence, filtered by kind and worker, refreshed live as
// runs arrive and health changes.

import { coalesce, executions, health, query } from "../api";
import { fill, h } from "../dom";
import { kindName, severityBadge, time } from "../format";
import { AnomalyKind, type Anomaly } from "../gen/runwarden/v1/query_service_pb";
import { load, type ViewContext } from "../ui";

const filters = { openOnly: true, kind: AnomalyKind.UNSPECIFIED as AnomalyKind, worker: "" };

export function anomaliesView(ctx: ViewContext, worker?: string): void {
  if (worker !== undefined) filters.worker = worker;
  const status = h("div", { class: "status" });
  const list = h("div", { id: "anomalies-list" });
  const kinds = Object.values(AnomalyKind).filter((v): v is AnomalyKind => typeof v === "number" && v !== AnomalyKind.UNSPECIFIED);
  const kindSelect = h(
    "select",
    { "aria-label": "anomaly kind", id: "filter-kind" },
    h("option", { value: "0" }, "All kinds"),
    kinds.map((k) => h("option", { value: String(k), selected: k === filters.kind }, kindName(k))),
  );
  const workerSelect = h("select", { "aria-label": "worker", id: "filter-worker" }, h("option", { value: "" }, "All workers"));
  const openOnly = h("input", { type: "checkbox", id: "open-only", checked: filters.openOnly });
  fill(
    ctx.root,
    h(
      "div",
      { class: "toolbar" },
      h("h1", {}, "Anomalies"),
      h("div", { class: "filters" }, h("label", { class: "check" }, openOnly, " open only"), kindSelect, workerSelect),
    ),
    status,
    list,
  );
  kindSelect.addEventListener("change", () => {
    filters.kind = Number(kindSelect.value) as AnomalyKind;
    void load(ctx, status, refresh);
  });
  workerSelect.addEventListener("change", () => {
    filters.worker = workerSelect.value;
    void load(ctx, status, refresh);
  });
  openOnly.addEventListener("change", () => {
    filters.openOnly = openOnly.checked;
    void load(ctx, status, refresh);
  });

  async function refresh() {
    const [r, ws] = await Promise.all([
      query.listAnomalies({ openOnly: filters.openOnly, kind: filters.kind, workerName: filters.worker, limit: 500 }),
      query.listWorkers({ limit: 1000 }),
    ]);
    if (ctx.gone()) return;
    fill(
      workerSelect,
      h("option", { value: "" }, "All workers"),
      ws.workers.map((w) => h("option", { value: w.workerName, selected: w.workerName === filters.worker }, w.workerName)),
    );
    draw(r.anomalies);
  }

  function draw(anomalies: Anomaly[]) {
    if (!anomalies.length) {
      fill(list, h("p", { class: "empty" }, filters.openOnly ? "No open anomaly matches." : "No anomaly matches."));
      return;
    }
    fill(
      list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid anomalies" },
          h("thead", {}, h("tr", {}, ["Opened", "Worker", "Kind", "Severity", "State", "Evidence"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            anomalies.map((a) => {
              const ev = a.evidence;
              const numbers = ev
                ? [
                    `value ${fmt(ev.value)}`,
                    ev.baselineMedian !== undefined ? `median ${fmt(ev.baselineMedian)}` : null,
                    ev.mad !== undefined ? `MAD ${fmt(ev.mad)}` : null,
                    `threshold ${fmt(ev.threshold)}`,
                    ev.window ? `${ev.window} runs` : null,
                  ]
                    .filter(Boolean)
                    .join(" · ")
                : "";
              return h(
                "tr",
                { "data-anomaly": a.anomalyId, "data-kind": kindName(a.kind) },
                h("td", {}, time(a.openedAt)),
                h("td", {}, h("a", { href: `#/worker/${encodeURIComponent(a.workerName)}` }, a.workerName)),
                h("td", {}, h("span", { class: "chip" }, kindName(a.kind))),
                h("td", {}, severityBadge(a.severity)),
                h("td", {}, a.resolvedAt ? h("span", { class: "muted" }, "resolved ", time(a.resolvedAt)) : h("strong", { class: "open" }, "open")),
                h("td", {}, h("div", {}, ev?.detail ?? ""), h("div", { class: "muted small" }, numbers)),
              );
            }),
          ),
        ),
      ),
    );
  }

  const refreshSoon = coalesce(() => void load(ctx, status, refresh), 1500);
  ctx.onLeave(executions.subscribe(() => refreshSoon()));
  ctx.onLeave(health.subscribe(() => refreshSoon()));
  void load(ctx, status, refresh);
}

function fmt(v: number): string {
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString() : Number.isInteger(v) ? String(v) : v.toFixed(2);
}
