// The dashboard's token path, exercised today against a stand-in for the server's coming auth: a
// small proxy in front of a real runwarden answers every grpc-web call without
// `authorization: Bearer <the token>` with grpc-status 16 (UNAUTHENTICATED) and a call with a token
// of the wrong scope with 7 (PERMISSION_DENIED), as the auth contract says the server will. The
// page and its assets pass through open. (dashboard.test.mjs has the same path against the real
// `runwarden token`, once the binary has it.)

import assert from "node:assert/strict";
import { request as httpRequest, createServer } from "node:http";
import { after, before, describe, it } from "node:test";
import { demo, freePort, launch, openPage, screenshot, startServer, tempDatabase } from "./harness.mjs";

const GOOD = "rw_read_0123456789abcdef";
const WRONG_SCOPE = "rw_report_0123456789abcdef";

let browser;
let db;
let server;
let proxy;
let proxyUrl;
const seen = [];

before(async () => {
  browser = await launch();
  db = tempDatabase();
  demo(db, 2);
  server = await startServer(db);
  const target = new URL(server.url);
  proxy = createServer((req, res) => {
    const rpc = req.url.startsWith("/runwarden.v1.");
    if (rpc) seen.push({ path: req.url, authorization: req.headers.authorization });
    const auth = req.headers.authorization;
    if (rpc && auth !== `Bearer ${GOOD}`) {
      const code = auth === `Bearer ${WRONG_SCOPE}` ? "7" : "16";
      res.writeHead(200, {
        "content-type": "application/grpc-web+proto",
        "grpc-status": code,
        "grpc-message": code === "7" ? "token lacks the read scope" : "missing or unknown token",
      });
      req.resume();
      res.end();
      return;
    }
    const upstream = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
    res.on("close", () => upstream.destroy());
  });
  const port = await freePort();
  await new Promise((ok) => proxy.listen(port, "127.0.0.1", ok));
  proxyUrl = `http://127.0.0.1:${port}`;
});

after(async () => {
  proxy?.closeAllConnections?.();
  await new Promise((ok) => (proxy ? proxy.close(ok) : ok()));
  await server?.stop();
  await browser?.close();
  db?.remove();
});

describe("token handling (against an auth stand-in)", () => {
  it("asks for a read token, says when it is rejected or lacks the scope, keeps it in sessionStorage only", async () => {
    const { page, context, errors } = await openPage(browser);
    await page.goto(proxyUrl);
    await page.waitForSelector('#token-message[data-state="required"]', { timeout: 10_000 });
    assert.match(await page.textContent("#token-form"), /This server requires a read token/);
    await screenshot(page, "token-required");

    await page.fill("#token-input", "rw_not_a_token");
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-message[data-state="rejected"]', { timeout: 10_000 });
    assert.match(await page.textContent("#token-message"), /Token rejected/);

    await page.fill("#token-input", WRONG_SCOPE);
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-message[data-state="forbidden"]', { timeout: 10_000 });
    assert.match(await page.textContent("#token-message"), /read scope/);

    await page.fill("#token-input", GOOD);
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('tr[data-worker="analytics_flush_worker"]', { timeout: 10_000 });
    await page.waitForSelector('#live[data-state="live"]', { timeout: 10_000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("runwarden.token")), GOOD);
    assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing in localStorage");
    const last = seen.slice(-5);
    assert.ok(last.every((c) => c.authorization === `Bearer ${GOOD}`), JSON.stringify(last));

    // Another view after a reload in the same tab: the stored token is used without asking.
    await page.reload();
    await page.waitForSelector('tr[data-worker="analytics_flush_worker"]', { timeout: 10_000 });
    assert.equal(await page.locator("#token-form").count(), 0);
    assert.deepEqual(errors, []);
    await context.close();

    // A new tab (new session) has no token: asked again.
    const fresh = await openPage(browser);
    await fresh.page.goto(proxyUrl);
    await fresh.page.waitForSelector('#token-message[data-state="required"]', { timeout: 10_000 });
    await fresh.context.close();
  });
});
