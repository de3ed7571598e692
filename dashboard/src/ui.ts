// What views share: loading a view's data with the error handling every view needs, section
// headings, window selectors.

import { classify, reportProblem, type Problem } from "./api";
import { h, fill } from "./dom";
import { StatsWindow } from "./gen/runwarden/v1/query_service_pb";

/** The cleanup a view returns; called when the user leaves it. */
export type Cleanup = () => void;

export interface ViewContext {
  root: HTMLElement;
  /** True once the user left this view (late answers must not draw). */
  gone(): boolean;
  /** Registers a cleanup for when the user leaves. */
  onLeave(fn: Cleanup): void;
}

/**
 * Runs `draw` and handles what can go wrong: token problems go to the app (which asks for a
 * token); an unreachable server or another error shows a message in `status` (cleared on
 * success) and retries every 5 s.
 */
export async function load(ctx: ViewContext, status: HTMLElement, draw: () => Promise<void>): Promise<void> {
  try {
    await draw();
    status.replaceChildren();
    reportProblem(null);
  } catch (e) {
    if (ctx.gone()) return;
    const p = classify(e);
    console.warn("load failed", p, e);
    if (p.kind === "token-required" || p.kind === "token-rejected" || p.kind === "forbidden") {
      reportProblem(p);
      return;
    }
    if (p.kind === "unreachable") reportProblem(p);
    fill(status, problemPanel(p));
    const timer = setTimeout(() => {
      if (!ctx.gone()) void load(ctx, status, draw);
    }, 5000);
    ctx.onLeave(() => clearTimeout(timer));
  }
}

export function problemPanel(p: Problem): HTMLElement {
  if (p.kind === "unreachable") {
    return h(
      "div",
      { class: "panel problem", role: "alert", "data-problem": "unreachable" },
      h("h2", {}, "Cannot reach the runwarden server"),
      h("p", {}, `No answer from ${window.location.origin}. Is \`runwarden serve\` running? Retrying every few seconds.`),
      h("p", { class: "muted small" }, p.detail),
    );
  }
  const detail = "detail" in p ? p.detail : "";
  return h(
    "div",
    { class: "panel problem", role: "alert", "data-problem": p.kind },
    h("h2", {}, "The server answered with an error"),
    h("p", {}, detail),
  );
}

export function section(title: string, ...children: (Node | string | null)[]): HTMLElement {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

export const WINDOWS: [StatsWindow, string][] = [
  [StatsWindow.STATS_WINDOW_24H, "24 h"],
  [StatsWindow.STATS_WINDOW_7D, "7 d"],
  [StatsWindow.STATS_WINDOW_30D, "30 d"],
  [StatsWindow.STATS_WINDOW_90D, "90 d"],
];

export function windowSeconds(w: StatsWindow): number {
  switch (w) {
    case StatsWindow.STATS_WINDOW_7D:
      return 7 * 86400;
    case StatsWindow.STATS_WINDOW_30D:
      return 30 * 86400;
    case StatsWindow.STATS_WINDOW_90D:
      return 90 * 86400;
    default:
      return 86400;
  }
}

/** A row of buttons choosing a stats window. */
export function windowPicker(current: StatsWindow, choose: (w: StatsWindow) => void, only?: StatsWindow[]): HTMLElement {
  return h(
    "div",
    { class: "seg", role: "group", "aria-label": "window" },
    WINDOWS.filter(([w]) => !only || only.includes(w)).map(([w, label]) =>
      h("button", { type: "button", class: w === current ? "on" : "", "aria-pressed": w === current, onclick: () => choose(w) }, label),
    ),
  );
}

export function stat(label: string, value: Node | string, title?: string): HTMLElement {
  return h("div", { class: "stat", title }, h("div", { class: "stat-value" }, value), h("div", { class: "stat-label" }, label));
}
