// Alert delivery attempts (ListAlertDeliveries), newest first: which channel got which alert
// state change, on which attempt, and what the receiver answered. Filtered by channel, refreshed
// every 10 s while the screen is open.

import { query } from "../api";
import { fill, h } from "../dom";
import { duration, time, toMillis } from "../format";
import type { AlertDelivery } from "../gen/runwarden/v1/query_service_pb";
import { load, type ViewContext } from "../ui";

const REFRESH_MS = 10_000;
const LIMIT = 500;

// Kept across visits: the chosen channel, and every channel seen so far (a filtered answer only
// names its own channel, the select must still offer the others).
const filters = { channel: "" };
const channelsSeen = new Set<string>();

export function alertsView(ctx: ViewContext): void {
  const status = h("div", { class: "status" });
  const list = h("div", { id: "alerts-list" });
  const channelSelect = h("select", { "aria-label": "channel", id: "filter-channel" });
  fill(
    ctx.root,
    h(
      "div",
      { class: "toolbar" },
      h("h1", {}, "Alerts"),
      h("span", { class: "muted small" }, "Delivery attempts, refreshed every 10 s"),
      h("div", { class: "filters" }, channelSelect),
    ),
    status,
    list,
  );
  drawChannels();
  channelSelect.addEventListener("change", () => {
    filters.channel = channelSelect.value;
    void refreshNow();
  });

  function drawChannels() {
    if (filters.channel) channelsSeen.add(filters.channel);
    fill(
      channelSelect,
      h("option", { value: "" }, "All channels"),
      [...channelsSeen].sort().map((c) => h("option", { value: c, selected: c === filters.channel }, c)),
    );
  }

  async function refresh() {
    const channel = filters.channel;
    const r = await query.listAlertDeliveries({ channel, limit: LIMIT });
    if (ctx.gone() || channel !== filters.channel) return;
    for (const d of r.deliveries) channelsSeen.add(d.channel);
    drawChannels();
    draw(
      [...r.deliveries].sort((a, b) => (toMillis(b.at) ?? 0) - (toMillis(a.at) ?? 0) || b.attempt - a.attempt),
    );
  }

  let inFlight = false;
  async function refreshNow() {
    if (inFlight) return;
    inFlight = true;
    try {
      await load(ctx, status, refresh);
    } finally {
      inFlight = false;
    }
  }

  function draw(deliveries: AlertDelivery[]) {
    if (!deliveries.length) {
      fill(
        list,
        h(
          "div",
          { class: "panel empty-state", id: "alerts-empty" },
          h("p", {}, filters.channel ? `No alert has been delivered to ${filters.channel} yet.` : "No alert has been delivered yet."),
          h(
            "p",
            { class: "muted small" },
            "Alerts go to the Alertmanager and webhooks of the ",
            h("code", {}, "[alerts]"),
            " section of the server's config file, when an anomaly opens, a worker goes LATE or DOWN or a guardian threshold is crossed. See ",
            h("code", {}, "docs/alerts.md"),
            ".",
          ),
        ),
      );
      return;
    }
    fill(
      list,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "grid alerts", id: "alerts-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["At", "Channel", "Worker", "Kind", "State", "Attempt", "Result", "HTTP", "Latency", "Error"].map((t) =>
                h("th", { scope: "col", class: t === "Attempt" || t === "HTTP" || t === "Latency" ? "num" : null }, t),
              ),
            ),
          ),
          h("tbody", {}, deliveries.map(row)),
        ),
      ),
    );
  }

  const timer = setInterval(() => {
    if (!ctx.gone()) void refreshNow();
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));
  void refreshNow();
}

function row(d: AlertDelivery): HTMLElement {
  const firing = d.state === "firing";
  return h(
    "tr",
    {
      "data-delivery": d.deliveryId,
      "data-channel": d.channel,
      "data-kind": d.kind,
      "data-state": d.state,
      "data-ok": String(d.ok),
      "data-status": String(d.httpStatus),
      "data-attempt": String(d.attempt),
    },
    h("td", {}, time(d.at)),
    h("td", {}, d.channel),
    h("td", {}, d.workerName ? h("a", { href: `#/worker/${encodeURIComponent(d.workerName)}` }, d.workerName) : h("span", { class: "muted" }, "—")),
    h(
      "td",
      { title: d.alertKey },
      h("span", { class: "chip" }, d.kind),
      d.severity ? h("span", { class: `badge severity-${d.severity.toLowerCase()}` }, d.severity) : null,
    ),
    h("td", {}, firing ? h("strong", { class: "open" }, "firing") : h("span", { class: "muted" }, d.state || "—")),
    h("td", { class: "num", title: `delivery ${d.deliveryId}` }, `#${d.attempt}`),
    h("td", {}, h("span", { class: `badge ${d.ok ? "delivery-ok" : "delivery-failed"}` }, d.ok ? "ok" : "failed")),
    h("td", { class: "num" }, d.httpStatus ? String(d.httpStatus) : h("span", { class: "muted", title: "no HTTP answer" }, "—")),
    h("td", { class: "num" }, duration(d.latencyMs)),
    h("td", {}, d.error ? h("span", { class: "truncate error-text", title: d.error }, d.error) : null),
  );
}
