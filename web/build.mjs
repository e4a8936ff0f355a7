// Bundles src/main.tsx (and its CSS) into dist/ with esbuild; copies index.html.
// `node build.mjs --watch` rebuilds on every change.

import { copyFile, mkdir, rm } from "node:fs/promises";
import * as esbuild from "esbuild";

const watch = process.argv.includes("--watch");
await rm("dist", { recursive: true, force: true });
await mkdir("dist", { recursive: true });
await copyFile("src/index.html", "dist/index.html");

const options = {
  entryPoints: { app: "src/main.tsx" },
  bundle: true,
  format: "esm",
  target: ["chrome111", "firefox111", "safari16.4"],
  jsx: "automatic",
  jsxImportSource: "preact",
  minify: !watch,
  sourcemap: true,
  outdir: "dist",
  logLevel: "info",
  legalComments: "linked",
};

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
