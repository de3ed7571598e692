// How values read on screen: times (local, UTC on hover), durations, counts (int64 arrives as
// bigint), and the badges of health states, quality levels, outcomes and severities.

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { h } from "./dom";
import { QualityLevel } from "./gen/runwarden/v1/analysis_pb";
import { Outcome } from "./gen/runwarden/v1/report_pb";
import { AnomalyKind, Severity, WorkerHealth } from "./gen/runwarden/v1/query_service_pb";

export function toDate(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

export function toMillis(ts: Timestamp | undefined): number | undefined {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : undefined;
}

export function num(value: bigint | number | undefined): number {
  return value === undefined ? 0 : Number(value);
}

const local = new Intl.DateTimeFormat(undefined, {
  year: "numeric",
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});

/** "2026-11-28 14:37:12 UTC". */
export function utcText(date: Date): string {
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A <time> in the viewer's local time, UTC in its title. */
export function time(ts: Timestamp | Date | undefined, text?: string): HTMLElement {
  const date = ts instanceof Date ? ts : toDate(ts);
  if (!date) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: date.toISOString(), title: utcText(date) }, text ?? local.format(date));
}

/** "3 min ago" as a <time>, the local and UTC time in its title. */
export function ago(ts: Timestamp | Date | undefined, now = Date.now()): HTMLElement {
  const date = ts instanceof Date ? ts : toDate(ts);
  if (!date) return h("span", { class: "muted" }, "never");
  const el = time(date, relative(now - date.getTime()));
  el.title = `${local.format(date)} (local) · ${utcText(date)}`;
  return el;
}

export function relative(ms: number): string {
  const future = ms < 0;
  const s = Math.abs(ms) / 1000;
  const text =
    s < 45 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : s < 129600 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

export function duration(ms: number | bigint | undefined): string {
  if (ms === undefined) return "—";
  const v = Number(ms);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  if (v < 3_600_000) return `${Math.floor(v / 60_000)} min ${Math.round((v % 60_000) / 1000)} s`;
  return `${Math.floor(v / 3_600_000)} h ${Math.round((v % 3_600_000) / 60_000)} min`;
}

export function percent(ratio: number | undefined, digits = 0): string {
  return ratio === undefined || Number.isNaN(ratio) ? "—" : `${(ratio * 100).toFixed(digits)} %`;
}

export function score(value: number | undefined): string {
  return value === undefined ? "—" : value.toFixed(1);
}

export function count(value: bigint | number | undefined): string {
  return num(value).toLocaleString();
}

/** The short name of an enum value: QUALITY_LEVEL_GOOD -> GOOD. */
function enumName(names: Record<number, string>, value: number, prefix: string): string {
  const full = names[value] ?? "";
  return full.startsWith(prefix) ? full.slice(prefix.length) : full || "UNSPECIFIED";
}

export const levelName = (v: QualityLevel) => (v === QualityLevel.UNSPECIFIED ? "—" : QualityLevel[v]);
export const healthName = (v: WorkerHealth) => (v === WorkerHealth.UNSPECIFIED ? "—" : WorkerHealth[v]);
export const outcomeName = (v: Outcome) => (v === Outcome.UNSPECIFIED ? "—" : Outcome[v]);
export const severityName = (v: Severity) => enumName(Severity, v, "");
export const kindName = (v: AnomalyKind) => enumName(AnomalyKind, v, "");

export function levelBadge(v: QualityLevel, text?: string): HTMLElement {
  const name = levelName(v);
  return h("span", { class: `badge level-${name.toLowerCase()}`, "data-level": name }, text ?? name);
}

export function healthBadge(v: WorkerHealth): HTMLElement {
  const name = healthName(v);
  return h("span", { class: `badge health-${name.toLowerCase()}`, "data-health": name }, name);
}

export function outcomeBadge(v: Outcome): HTMLElement {
  const name = outcomeName(v);
  return h("span", { class: `outcome outcome-${name.toLowerCase()}` }, name);
}

export function severityBadge(v: Severity): HTMLElement {
  const name = severityName(v);
  return h("span", { class: `badge severity-${name.toLowerCase()}` }, name);
}

export const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** A UTC hour of the day as "14:00 UTC (15:00 local)". */
export function utcHour(hour: number): string {
  const d = new Date();
  d.setUTCHours(hour, 0, 0, 0);
  const localHour = d.getHours();
  return `${String(hour).padStart(2, "0")}:00 UTC` + (localHour !== hour ? ` (${String(localHour).padStart(2, "0")}:00 local)` : "");
}
