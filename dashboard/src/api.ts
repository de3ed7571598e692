// The only way the page talks to the server: grpc-web clients of QueryService and
// GuardianService on the page's own origin, a bearer token from sessionStorage on every call,
// errors sorted into what the user can do about them, and the two live streams kept open with
// reconnects (backoff) while the page is open.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { GuardianService, type HealthEvent } from "./gen/runwarden/v1/guardian_service_pb";
import { QueryService, type Execution } from "./gen/runwarden/v1/query_service_pb";

export const TOKEN_KEY = "runwarden.token";

export function token(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Why calls fail, as far as the user is concerned. */
export type Problem =
  | { kind: "unreachable"; detail: string }
  | { kind: "token-required" }
  | { kind: "token-rejected"; detail: string }
  | { kind: "forbidden"; detail: string }
  | { kind: "error"; detail: string };

/** Every call carries the token the user entered, if any (the static files need none). */
const auth: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

const transport = createGrpcWebTransport({ baseUrl: window.location.origin, interceptors: [auth] });

export const query: Client<typeof QueryService> = createClient(QueryService, transport);
export const guardian: Client<typeof GuardianService> = createClient(GuardianService, transport);

export function classify(e: unknown): Problem {
  const err = ConnectError.from(e);
  // Every call sends the stored token, so with one stored, UNAUTHENTICATED means it was refused.
  const sentToken = token() !== null;
  switch (err.code) {
    case Code.Unauthenticated:
      return sentToken ? { kind: "token-rejected", detail: err.rawMessage } : { kind: "token-required" };
    case Code.PermissionDenied:
      return { kind: "forbidden", detail: err.rawMessage };
    case Code.Unavailable:
      return { kind: "unreachable", detail: err.rawMessage };
    case Code.Unknown:
    case Code.Internal:
      // fetch() failing (server down, connection refused) arrives as an unknown error.
      if (/fetch|network|load failed|connection/i.test(err.rawMessage) || err.cause instanceof TypeError) {
        return { kind: "unreachable", detail: err.rawMessage };
      }
      return { kind: "error", detail: `${Code[err.code]}: ${err.rawMessage}` };
    default:
      return { kind: "error", detail: `${Code[err.code] ?? err.code}: ${err.rawMessage}` };
  }
}

// ---- the app-wide problem state: views render it, the token form clears it -----------------

type ProblemListener = (p: Problem | null) => void;
const problemListeners = new Set<ProblemListener>();
let currentProblem: Problem | null = null;

export function problem(): Problem | null {
  return currentProblem;
}

export function onProblem(fn: ProblemListener): () => void {
  problemListeners.add(fn);
  return () => problemListeners.delete(fn);
}

export function reportProblem(p: Problem | null): void {
  const same = JSON.stringify(p) === JSON.stringify(currentProblem);
  currentProblem = p;
  if (!same) for (const fn of problemListeners) fn(p);
}

// ---- live streams ----------------------------------------------------------------------------

export type LiveState = "connecting" | "live" | "retrying" | "stopped";

type Listener<T> = (value: T) => void;

/** A server stream kept open: reconnects with backoff (1 s doubling to 30 s) until stopped. */
class LiveStream<T> {
  private listeners = new Set<Listener<T>>();
  private stateListeners = new Set<Listener<LiveState>>();
  private controller: AbortController | null = null;
  state: LiveState = "stopped";

  constructor(
    private readonly name: string,
    private readonly open: (signal: AbortSignal, onHeader: () => void) => AsyncIterable<T>,
  ) {}

  subscribe(fn: Listener<T>): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onState(fn: Listener<LiveState>): () => void {
    this.stateListeners.add(fn);
    return () => this.stateListeners.delete(fn);
  }

  private setState(state: LiveState): void {
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  }

  start(): void {
    if (this.controller) return;
    const controller = new AbortController();
    this.controller = controller;
    void this.loop(controller.signal);
  }

  stop(): void {
    this.controller?.abort();
    this.controller = null;
    this.setState("stopped");
  }

  restart(): void {
    this.stop();
    this.start();
  }

  private async loop(signal: AbortSignal): Promise<void> {
    let delay = 1000;
    while (!signal.aborted) {
      this.setState("connecting");
      // Connected once the response headers arrive, before any message.
      const connected = () => {
        if (this.state === "live") return;
        this.setState("live");
        delay = 1000;
        if (problem()?.kind === "unreachable") reportProblem(null);
      };
      try {
        for await (const message of this.open(signal, connected)) {
          connected();
          for (const fn of this.listeners) fn(message);
        }
      } catch (e) {
        if (signal.aborted) return;
        const p = classify(e);
        console.warn(`${this.name} stream ended`, p);
        if (p.kind === "token-required" || p.kind === "token-rejected" || p.kind === "forbidden") {
          reportProblem(p);
          this.controller = null;
          this.setState("stopped");
          return;
        }
        if (p.kind === "unreachable") reportProblem(p);
      }
      if (signal.aborted) return;
      this.setState("retrying");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 30_000);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export const executions = new LiveStream<Execution>("WatchExecutions", (signal, onHeader) =>
  query.watchExecutions({}, { signal, onHeader }),
);
export const health = new LiveStream<HealthEvent>("WatchHealth", (signal, onHeader) =>
  guardian.watchHealth({}, { signal, onHeader }),
);

/**
 * Coalesces calls: the first schedules `fn` in `ms`, later calls until then ride along. (Not a
 * debounce that restarts its timer: events arriving every second would starve it.)
 */
export function coalesce(fn: () => void, ms: number): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      fn();
    }, ms);
  };
}

/** Every page of a paginated list, up to `maxPages`. */
export async function allPages<T>(
  page: (token: string) => Promise<{ items: T[]; next: string }>,
  maxPages = 10,
): Promise<T[]> {
  const out: T[] = [];
  let next = "";
  for (let i = 0; i < maxPages; i++) {
    const r = await page(next);
    out.push(...r.items);
    if (!r.next) break;
    next = r.next;
  }
  return out;
}
