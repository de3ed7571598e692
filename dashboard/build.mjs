// Builds dist/: index.html, assets/app-<hash>.js and .css (content-hashed, so the server can
// cache them forever), and a gzip copy of each for the server to send to browsers that accept
// it. Deterministic: the same sources and lockfile give byte-identical output (CI checks).

import { build } from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { gzipSync, constants } from "node:zlib";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets"), { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: { app: "src/main.ts" },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome100", "firefox100", "safari15"],
  outdir: "dist",
  entryNames: "assets/[name]-[hash]",
  assetNames: "assets/[name]-[hash]",
  legalComments: "none",
  sourcemap: false,
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => relative("dist", p).replaceAll("\\", "/"));
const js = outputs.find((p) => p.endsWith(".js"));
const css = outputs.find((p) => p.endsWith(".css"));
if (!js || !css) throw new Error(`unexpected outputs: ${outputs.join(", ")}`);

const html = readFileSync(join(root, "src/index.html"), "utf8").replace("%JS%", js).replace("%CSS%", css);
writeFileSync(join(dist, "index.html"), html);

let raw = 0;
let zipped = 0;
for (const file of ["index.html", js, css]) {
  const bytes = readFileSync(join(dist, file));
  // zlib's gzip header has no timestamp or name: the output depends on the input only.
  const gz = gzipSync(bytes, { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(join(dist, `${file}.gz`), gz);
  raw += bytes.length;
  zipped += gz.length;
  console.log(`${file.padEnd(32)} ${String(bytes.length).padStart(8)} B  ${String(gz.length).padStart(7)} B gzip`);
}
console.log(`${"total".padEnd(32)} ${String(raw).padStart(8)} B  ${String(zipped).padStart(7)} B gzip`);
