// The page: header and navigation, a hash router over the views, the live connection indicator,
// and what to show when the server is unreachable or asks for a token.

import "./style.css";
import { executions, health, onProblem, problem, reportProblem, setToken, token, type Problem } from "./api";
import { destroyDetached } from "./charts";
import { fill, h } from "./dom";
import { type Cleanup, type ViewContext } from "./ui";
import { alertsView } from "./views/alerts";
import { anomaliesView } from "./views/anomalies";
import { qualityView } from "./views/quality";
import { streamsView } from "./views/streams";
import { workerView } from "./views/worker";
import { workersView } from "./views/workers";

const NAV: [string, string][] = [
  ["#/", "Workers"],
  ["#/quality", "Data quality"],
  ["#/anomalies", "Anomalies"],
  ["#/streams", "Streams"],
  ["#/alerts", "Alerts"],
];

const liveDot = h("span", { class: "live-dot", id: "live", title: "live updates" }, "connecting");
const nav = h("nav", { class: "main-nav", "aria-label": "sections" });
const banner = h("div", { id: "banner" });
const main = h("main", { id: "view" });

document.body.replaceChildren(
  h("header", { class: "top" }, h("a", { class: "brand", href: "#/" }, "runwarden"), nav, liveDot),
  banner,
  main,
);

let leaving: Cleanup[] = [];
let gone = { value: false };

function route(): void {
  for (const fn of leaving) fn();
  leaving = [];
  gone.value = true;
  const mine = { value: false };
  gone = mine;
  destroyDetached();

  const hash = window.location.hash || "#/";
  fill(
    nav,
    NAV.map(([href, label]) => {
      const active = href === "#/" ? hash === "#/" || hash.startsWith("#/worker/") : hash.startsWith(href);
      return h("a", { href, class: active ? "active" : "", "aria-current": active ? "page" : null }, label);
    }),
  );

  const p = problem();
  if (p && (p.kind === "token-required" || p.kind === "token-rejected" || p.kind === "forbidden")) {
    fill(main, tokenForm(p));
    return;
  }
  const ctx: ViewContext = {
    root: main,
    gone: () => mine.value,
    onLeave: (fn) => leaving.push(fn),
  };
  const [, section, arg] = hash.split("/");
  switch (section) {
    case "worker":
      workerView(ctx, decodeURIComponent(arg ?? ""));
      break;
    case "quality":
      qualityView(ctx);
      break;
    case "anomalies":
      anomaliesView(ctx);
      break;
    case "streams":
      streamsView(ctx);
      break;
    case "alerts":
      alertsView(ctx);
      break;
    default:
      workersView(ctx);
  }
  window.scrollTo(0, 0);
}

function tokenForm(p: Problem): HTMLElement {
  const input = h("input", {
    type: "password",
    id: "token-input",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "paste a token with the read scope",
    "aria-label": "API token",
    required: true,
  });
  const message =
    p.kind === "token-rejected"
      ? h("p", { class: "bad", id: "token-message", "data-state": "rejected" }, "Token rejected: the server did not accept it (unknown, expired or revoked). Enter another one.")
      : p.kind === "forbidden"
        ? h("p", { class: "bad", id: "token-message", "data-state": "forbidden" }, "This token is valid but may not read: it needs the read scope.")
        : h("p", { id: "token-message", "data-state": "required" }, "This server requires a read token.");
  const form = h(
    "form",
    { class: "panel token-form", id: "token-form" },
    h("h1", {}, "This server requires a read token"),
    message,
    h("p", { class: "muted small" }, "Create one with ", h("code", {}, "runwarden token create --name NAME --scope read"), ". It is kept in this tab only (sessionStorage) and sent with every call."),
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Use token")),
    token() ? h("button", { type: "button", class: "link", onclick: () => { setToken(null); location.reload(); } }, "Forget the stored token") : null,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    // Start over with the token (clearing the problem redraws the view); a refusal comes back
    // as "token-rejected" or "forbidden".
    reportProblem(null);
    executions.restart();
    health.restart();
  });
  queueMicrotask(() => input.focus());
  return form;
}

let lastProblemKind: string | null = null;

onProblem((p) => {
  const kind = p?.kind ?? null;
  if (p?.kind === "unreachable") {
    fill(
      banner,
      h(
        "div",
        { class: "banner bad", role: "alert", id: "unreachable-banner" },
        h("strong", {}, "Cannot reach the runwarden server"),
        ` at ${window.location.origin}; retrying. What you see may be out of date.`,
      ),
    );
  } else {
    banner.replaceChildren();
  }
  const authProblem = kind === "token-required" || kind === "token-rejected" || kind === "forbidden";
  const wasAuth = lastProblemKind === "token-required" || lastProblemKind === "token-rejected" || lastProblemKind === "forbidden";
  lastProblemKind = kind;
  if (authProblem) {
    executions.stop();
    health.stop();
    route();
  } else if (wasAuth && kind === null) {
    route();
  }
});

function showLive(): void {
  const states = [executions.state, health.state];
  const overall = states.every((s) => s === "live") ? "live" : states.some((s) => s === "retrying") ? "retrying" : states.some((s) => s === "stopped") ? "stopped" : "connecting";
  liveDot.dataset.state = overall;
  liveDot.textContent = overall === "live" ? "live" : overall === "retrying" ? "reconnecting…" : overall === "stopped" ? "paused" : "connecting";
}
executions.onState(showLive);
health.onState(showLive);

window.addEventListener("hashchange", route);
// Charts take their colours from the scheme: redraw when it changes.
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", route);

route();
executions.start();
health.start();
