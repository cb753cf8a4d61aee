// Builds the browser UI into dist/: index.html plus content-hashed assets under dist/assets/.
// The wattmesh binary embeds dist/ at compile time. Usage: node build.mjs [--dev]
//   --dev  no minification, inline source maps (for the dev mock server only)
// Files whose content did not change are left alone (so cargo does not rebuild the binary).
import * as esbuild from 'esbuild';
import { readFile, writeFile, rm, mkdir, readdir, stat } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, 'dist');
const dev = process.argv.includes('--dev');

const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: ['src/main.jsx'],
  bundle: true,
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  format: 'esm',
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: !dev,
  sourcemap: dev ? 'inline' : false,
  legalComments: 'none',
  metafile: true,
  write: false,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': dev ? '"development"' : '"production"' },
});

const files = new Map(); // path relative to dist -> contents
let js = null;
let css = null;
for (const f of result.outputFiles) {
  const rel = path.relative(dist, f.path);
  files.set(rel, Buffer.from(f.contents));
  if (rel.endsWith('.js')) js = rel;
  if (rel.endsWith('.css')) css = rel;
}
if (!js || !css) throw new Error('build produced no script or stylesheet');

const template = await readFile(path.join(root, 'src/index.html'), 'utf8');
const html = template
  .replace('<!--STYLES-->', `<link rel="stylesheet" href="${css}">`)
  .replace('<!--SCRIPTS-->', `<script type="module" src="${js}"></script>`);
files.set('index.html', Buffer.from(html));

// Write what changed, remove what is no longer built.
async function listFiles(dir, base = dir) {
  let out = [];
  let names = [];
  try {
    names = await readdir(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    const p = path.join(dir, name);
    if ((await stat(p)).isDirectory()) out = out.concat(await listFiles(p, base));
    else out.push(path.relative(base, p));
  }
  return out;
}
for (const old of await listFiles(dist)) if (!files.has(old)) await rm(path.join(dist, old));
for (const [rel, buf] of files) {
  const p = path.join(dist, rel);
  const cur = await readFile(p).catch(() => null);
  if (cur && cur.equals(buf)) continue;
  await mkdir(path.dirname(p), { recursive: true });
  await writeFile(p, buf);
}

// Report sizes: what a browser downloads on first load, raw and gzipped.
let raw = 0;
let gz = 0;
const rows = [];
async function walk(dir) {
  for (const name of await readdir(dir)) {
    const p = path.join(dir, name);
    if ((await stat(p)).isDirectory()) await walk(p);
    else {
      const buf = await readFile(p);
      const z = gzipSync(buf, { level: 9 }).length;
      raw += buf.length;
      gz += z;
      rows.push(`  ${path.relative(dist, p).padEnd(36)} ${String(buf.length).padStart(8)} B  ${String(z).padStart(7)} B gz`);
    }
  }
}
await walk(dist);
console.log(`web-ui built into ${path.relative(process.cwd(), dist) || '.'}:`);
console.log(rows.join('\n'));
console.log(`  total ${raw} B, ${gz} B gzipped`);
if (!dev && gz > 300 * 1024) {
  console.error('first load exceeds 300 KB gzipped');
  process.exit(1);
}
