// Builds the static site that runs the zoo's models in the browser (see scripts/site).
//
// The folder holds the page of tpsnet-serve (serve/page), onnxruntime-web's WASM build
// (from web/node_modules, pinned by web/package-lock.json), the chosen models' ONNX files
// and models.json: the same list the server answers at /models.json, with "mode":
// "browser", each model's file URL, and the runtime's files and sizes.

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MARKER = '.tpsnet-site';
const USAGE = `usage: scripts/site [OUT_DIR] [--model NAME]... [--models-dir DIR] [--max-image-side PX] [--max-file-bytes N]

Builds a static site in OUT_DIR (default: target/site) that runs the zoo's models in the
browser with onnxruntime-web (WASM). Any static file host serves it; for a quick look:
  python3 -m http.server -d OUT_DIR 8080 --bind 127.0.0.1   then open http://localhost:8080/
(the page checks each model's sha256 with crypto.subtle, which browsers offer only over
https or on localhost). --model (repeatable) picks models by name; default: every model
in the models folder. Needs web/node_modules: run scripts/setup --browser first.`;

function fail(message) {
  console.error(`site: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { out: join(root, 'target', 'site'), models: [], modelsDir: join(root, 'models'), maxSide: 4096, maxBytes: 32 * 1024 * 1024 };
  const value = (i, flag) => {
    if (i + 1 >= argv.length) fail(`${flag} needs a value\n${USAGE}`);
    return argv[i + 1];
  };
  let outGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (a === '--model') args.models.push(value(i++, a));
    else if (a === '--models-dir') args.modelsDir = resolve(value(i++, a));
    else if (a === '--max-image-side') args.maxSide = positive(value(i++, a), a);
    else if (a === '--max-file-bytes') args.maxBytes = positive(value(i++, a), a);
    else if (a.startsWith('-')) fail(`unknown option ${a}\n${USAGE}`);
    else if (outGiven) fail(`one output folder only (got ${args.out} and ${a})`);
    else {
      args.out = resolve(a);
      outGiven = true;
    }
  }
  return args;
}

function positive(text, flag) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) fail(`${flag} takes a whole number >= 1, not \`${text}\``);
  return n;
}

/// The manifests in the models folder (JSON files with a `file` and a `sha256`).
function manifests(dir) {
  if (!existsSync(dir)) fail(`no models folder at ${dir}; pass --models-dir DIR`);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => {
      try {
        return JSON.parse(readFileSync(join(dir, f), 'utf8'));
      } catch (e) {
        fail(`${join(dir, f)} is not valid JSON: ${e.message}`);
      }
      return null;
    })
    .filter((m) => m && typeof m.file === 'string' && typeof m.sha256 === 'string' && Array.isArray(m.classes))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/// A model as the page shows it: the fields tpsnet-serve's /models.json gives.
function card(m) {
  return {
    name: m.name,
    version: m.sha256.slice(0, 8),
    file: m.file,
    sha256: m.sha256,
    bytes: m.bytes,
    params: m.params,
    macs: m.macs,
    precision: m.precision || 'fp32',
    source: m.quantization ? m.quantization.source.name : null,
    classes: m.classes,
    metrics: m.metrics,
    input: m.input,
    output: m.output,
    url: `models/${m.file}`,
  };
}

function checkedCopy(m, modelsDir, out) {
  const from = join(modelsDir, m.file);
  if (!existsSync(from)) fail(`${from} (named by ${m.name}'s manifest) is missing`);
  const bytes = readFileSync(from);
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (sha !== m.sha256.toLowerCase() || bytes.length !== m.bytes) {
    fail(`${from} does not match its manifest: sha256 ${sha} (${bytes.length} bytes), manifest ${m.sha256} (${m.bytes} bytes)`);
  }
  writeFileSync(join(out, 'models', m.file), bytes);
}

function prepareOut(out) {
  if (existsSync(out)) {
    const entries = readdirSync(out);
    if (entries.length && !entries.includes(MARKER)) {
      fail(`${out} exists and is not a site built by scripts/site; pass an empty or new folder`);
    }
    rmSync(out, { recursive: true, force: true });
  }
  mkdirSync(join(out, 'models'), { recursive: true });
  mkdirSync(join(out, 'ort'), { recursive: true });
  writeFileSync(join(out, MARKER), 'built by scripts/site; rebuilt (deleted and written anew) by the next run\n');
}

function copyRuntime(out) {
  const pkgDir = join(root, 'web', 'node_modules', 'onnxruntime-web');
  if (!existsSync(join(pkgDir, 'package.json'))) {
    fail('web/node_modules/onnxruntime-web is missing: run scripts/setup --browser (npm ci in web/)');
  }
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  const version = pkg.version;
  // The WASM-only ES module with its loader inside, and the SIMD+threads WASM binary it loads.
  const files = ['ort.wasm.bundle.min.mjs', 'ort-wasm-simd-threaded.wasm'];
  for (const f of files) copyFileSync(join(pkgDir, 'dist', f), join(out, 'ort', f));
  // The package ships no licence file; its package.json names the licence.
  writeFileSync(join(out, 'ort', 'NOTICE'), `${pkg.name} ${version} (${pkg.homepage || 'npm'}): ${pkg.license} licence, copyright Microsoft Corporation.\n`);
  return {
    package: 'onnxruntime-web',
    version,
    files: files.map((f) => ({ path: `ort/${f}`, bytes: statSync(join(out, 'ort', f)).size })),
  };
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const all = manifests(args.modelsDir);
  let chosen = all;
  if (args.models.length) {
    chosen = args.models.map((name) => all.find((m) => m.name === name)
      || fail(`no model \`${name}\` in ${args.modelsDir}; there are: ${all.map((m) => m.name).join(', ')}`));
  }
  if (!chosen.length) fail(`no model manifests in ${args.modelsDir}`);
  prepareOut(args.out);
  for (const f of ['index.html', 'app.js', 'style.css']) copyFileSync(join(root, 'serve', 'page', f), join(args.out, f));
  const runtime = copyRuntime(args.out);
  for (const m of chosen) checkedCopy(m, args.modelsDir, args.out);
  const config = {
    mode: 'browser',
    runtime,
    limits: { max_body_bytes: args.maxBytes, max_image_side: args.maxSide },
    models: chosen.map(card),
  };
  writeFileSync(join(args.out, 'models.json'), `${JSON.stringify(config, null, 1)}\n`);
  const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
  const rt = runtime.files.reduce((s, f) => s + f.bytes, 0);
  const models = chosen.reduce((s, m) => s + m.bytes, 0);
  console.log(`site: ${args.out}: ${chosen.length} model(s) (${mb(models)}), onnxruntime-web ${runtime.version} (${mb(rt)}, downloaded once per visitor)`);
  console.log(`site: try it: python3 -m http.server -d ${args.out} 8080 --bind 127.0.0.1, then open http://localhost:8080/`);
}

main();
