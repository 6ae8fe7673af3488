// Builds the app into dist/: index.html at the top, the script, styles and config under app/.
// The page is served at `/` by the local stack and by CloudFront on AWS (docs/web.md).
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

// SD_WEB_OUT: another folder (scripts/deploy-web.sh builds the AWS copy apart from the local one)
const out = process.env.SD_WEB_OUT ?? "dist";
rmSync(out, { recursive: true, force: true });
mkdirSync(`${out}/app`, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["es2022"],
  format: "esm",
  outfile: `${out}/app/app.js`,
  logLevel: "warning",
});
cpSync("src/index.html", `${out}/index.html`);
cpSync("src/app.css", `${out}/app/app.css`);
// where the API is: "" is the page's own origin (the local stack; CloudFront's /api behaviour
// is named at deploy time, see scripts/deploy-web.sh)
writeFileSync(`${out}/app/config.json`, JSON.stringify({ apiBase: process.env.SD_WEB_API_BASE ?? "" }) + "\n");
