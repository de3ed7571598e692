// What the browser tests share: the runwarden binary started on a free loopback port against a
// fresh temporary SQLite file, `runwarden demo` data, Debian's chromium through playwright-core,
// and the REST shim for the test's own calls (the browser itself only speaks grpc-web).

import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "..", "..");

/** The binary under test: $RUNWARDEN_BIN, else the debug build in $CARGO_TARGET_DIR or target/. */
export const BIN =
  process.env.RUNWARDEN_BIN ??
  join(process.env.CARGO_TARGET_DIR ?? join(repo, "target"), "debug", "runwarden");

/** The bundle `npm run build` wrote; the binary embeds the one it was compiled with. */
export const DIST = resolve(here, "..", "dist");

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Where screenshots go when $RUNWARDEN_SCREENSHOTS names a directory (npm run screenshots). */
export const SCREENSHOTS = process.env.RUNWARDEN_SCREENSHOTS ? resolve(process.env.RUNWARDEN_SCREENSHOTS) : null;

export async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** A fresh temp directory with a SQLite URL inside it. */
export function tempDatabase() {
  const dir = mkdtempSync(join(tmpdir(), "runwarden-dash-"));
  return { dir, url: `sqlite://${join(dir, "runwarden.db")}?mode=rwc`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function run(args, options = {}) {
  return execFileSync(BIN, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options });
}

export function demo(db, days = 30) {
  return run(["demo", "--days", String(days), "--database", db.url], { env: { ...process.env, RUST_LOG: "warn" } });
}

/** True when the binary has a `token` subcommand (the auth work on main). */
export function hasTokenCommand() {
  const help = run(["--help"]);
  return /^\s+token\b/m.test(help);
}

/**
 * Starts `runwarden serve` on a free port. `guardianTick` shortens the guardian's tick (seconds)
 * through a config file; `extraConfig` is TOML appended to that file (e.g. an `[alerts]` section).
 * Resolves once the page answers.
 */
export async function startServer(db, { guardianTick = 1, extraArgs = [], extraConfig = "" } = {}) {
  const port = await freePort();
  const config = join(db.dir, "runwarden.toml");
  writeFileSync(config, `[guardian]\ntick_interval_seconds = ${guardianTick}\n${extraConfig ? `\n${extraConfig.trim()}\n` : ""}`);
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--database", db.url, "--config", config, ...extraArgs];
  const proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
  let log = "";
  proc.stdout.on("data", (d) => (log += d));
  proc.stderr.on("data", (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited(proc)) throw new Error(`runwarden exited (${proc.exitCode ?? proc.signalCode}):\n${log}`);
    try {
      // The dashboard page is always open (/metrics needs a token once auth is on).
      const r = await fetch(`${url}/`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`runwarden did not start within 20 s:\n${log}`);
    }
    await sleep(100);
  }
  // The binary embeds dashboard/dist/ when it is compiled: one built before the current bundle
  // serves an older page. Then serve the current dist/ from disk in front of it (everything else
  // passes through), so the tests exercise the sources; $RUNWARDEN_STRICT_BUNDLE=1 fails instead.
  const front = await frontIfStale(url);
  if (front && process.env.RUNWARDEN_STRICT_BUNDLE) {
    await new Promise((ok) => front.server.close(ok));
    proc.kill("SIGKILL");
    throw new Error(`${BIN} embeds a different dashboard bundle than dashboard/dist/: rebuild it`);
  }
  return {
    url: front?.url ?? url,
    port: front?.port ?? port,
    proc,
    log: () => log,
    async stop() {
      if (front?.server.listening) {
        front.server.closeAllConnections();
        front.server.close();
      }
      if (exited(proc)) return;
      const done = new Promise((ok) => proc.once("exit", ok));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await done;
      clearTimeout(timer);
    },
  };
}

const CONTENT_TYPES = { html: "text/html; charset=utf-8", js: "text/javascript; charset=utf-8", css: "text/css; charset=utf-8" };

/** A proxy serving dist/ from disk in front of `upstream`, or null when it serves the same page. */
async function frontIfStale(upstream) {
  const page = readFileSync(join(DIST, "index.html"), "utf8");
  if ((await (await fetch(`${upstream}/`)).text()) === page) return null;
  const target = new URL(upstream);
  const server = createHttpServer((req, res) => {
    const path = new URL(req.url, upstream).pathname;
    const file = path === "/" || path === "/index.html" ? "index.html" : path.startsWith("/assets/") ? path.slice(1) : null;
    if (file && req.method === "GET") {
      const full = join(DIST, file);
      if (!full.startsWith(DIST) || file.endsWith(".gz") || !existsSync(full)) {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
        res.end("not found\n");
        return;
      }
      const type = CONTENT_TYPES[file.split(".").pop()] ?? "application/octet-stream";
      res.writeHead(200, { "content-type": type, "cache-control": file === "index.html" ? "no-cache" : "public, max-age=31536000, immutable" });
      res.end(readFileSync(full));
      return;
    }
    const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
    res.on("close", () => up.destroy());
  });
  const port = await freePort();
  await new Promise((ok) => server.listen(port, "127.0.0.1", ok));
  console.log(`# NOTE: ${BIN} embeds an older dashboard bundle; serving dashboard/dist/ from disk in front of it (rebuild the binary to test the embedded one)`);
  return { server, port, url: `http://127.0.0.1:${port}` };
}

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

export function sleep(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}

export async function rest(server, path, init) {
  const r = await fetch(`${server.url}${path}`, init);
  const text = await r.text();
  if (!r.ok) throw new Error(`${init?.method ?? "GET"} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

/** Submits a report through the REST shim (the test may; the browser may not). */
export function submit(server, report) {
  return rest(server, "/api/v1/orchestrator/reports", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(report),
  });
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/**
 * A page that fails the test on uncaught errors and records every request it makes, so a test
 * can check the browser spoke only grpc-web (no REST).
 */
export async function openPage(browser, { width = 1280, height = 800, colorScheme = "light", timezoneId = "Europe/Berlin" } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme, timezoneId, locale: "en-GB" });
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("request", (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  return { page, context, errors, requests };
}

export async function screenshot(page, name, options = {}) {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), ...options });
}
