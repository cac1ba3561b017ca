// The zoo's page: pick a model, drop images, see the top-5 classes, the 32x32 picture the
// model saw and the time it took.
//
// Two modes, chosen by models.json beside this file:
// * "server": served by tpsnet-serve. Images go to POST v2/models/NAME/classify (one request
//   per image); POST page/preview returns the 32x32 picture after the server's preprocessing;
//   the Server-Timing header gives the server's time.
// * "browser": the static site `scripts/site` builds. The model's ONNX file is downloaded,
//   its sha256 checked against the manifest (crypto.subtle), and run with onnxruntime-web
//   (WASM). Preprocessing reproduces the runtime's (runtime/src/preprocess.rs): RGB bytes
//   / 255, resized to 32x32 with the `image` crate's Triangle filter in f32 arithmetic, so
//   a PNG gives the same input as `tpsnet-infer`; test-time augmentation averages the
//   logits of the views of zoo::tta.

const TOP_K = 5;
const SIDE = 32;
const PLANE = SIDE * SIDE;
const IMAGE_FLOATS = 3 * PLANE;
/// What the runtime decodes (the `image` crate's formats enabled in tpsnet-serve).
const FORMATS = 'PNG, JPEG, BMP, GIF, WebP, TIFF';
/// How many server requests run at once.
const PARALLEL_REQUESTS = 4;

// zoo::tta: views of an image and the weight of each view's logits.
const TTA_VIEWS = {
  none: [{ mirror: false, shift: 0, weight: 1 }],
  flip: [{ mirror: false, shift: 0, weight: 0.5 }, { mirror: true, shift: 0, weight: 0.5 }],
  '6view': [
    { mirror: false, shift: 0, weight: 0.25 }, { mirror: true, shift: 0, weight: 0.25 },
    { mirror: false, shift: 1, weight: 0.125 }, { mirror: true, shift: 1, weight: 0.125 },
    { mirror: false, shift: -1, weight: 0.125 }, { mirror: true, shift: -1, weight: 0.125 },
  ],
};
const TTA_LABELS = {
  none: 'none: one view',
  flip: 'flip: the image and its mirror (2 runs)',
  '6view': '6view: mirror × 3 shifts (6 runs)',
};
// The manifest's names for claims (metrics.claim) and their metrics.
const CLAIM_MODES = { single: 'none', flip_tta: 'flip', '6view': '6view' };
const MODE_METRICS = { none: 'top1', flip: 'top1_flip_tta', '6view': 'top1_6view' };

const $ = (id) => document.getElementById(id);
const f32 = Math.fround;

const state = {
  config: null,
  model: null,
  tta: 'none',
  files: [],
  run: 0,
  sessions: new Map(),
  urls: [],
  ort: null,
};

class UserError extends Error {}

// ---------------------------------------------------------------- formatting

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

function millions(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(1)} k`;
}

function percent(p) {
  return `${(100 * p).toFixed(2)} %`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role') node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function setStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

// ---------------------------------------------------------------- models

function claimMode(model) {
  return CLAIM_MODES[model.metrics.claim] || 'none';
}

function claimedTop1(model, mode) {
  const v = model.metrics[MODE_METRICS[mode]];
  return typeof v === 'number' ? v : null;
}

function modelLabel(m) {
  const top1 = claimedTop1(m, claimMode(m));
  return `${m.name} (${m.precision || 'fp32'}, ${top1 === null ? '?' : top1.toFixed(2)} % claimed)`;
}

function showFacts(m) {
  const mode = claimMode(m);
  const claimed = claimedTop1(m, mode);
  const single = m.metrics.top1;
  const claim = mode === 'none'
    ? `${claimed.toFixed(2)} % (one view)`
    : `${claimed.toFixed(2)} % with ${mode} TTA; ${single.toFixed(2)} % with one view`;
  const precision = m.source ? `${m.precision || 'fp32'} (quantized from ${m.source})` : (m.precision || 'fp32');
  const facts = [
    ['Claimed top-1', `${claim}, ${m.metrics.dataset} (${m.metrics.images.toLocaleString('en')} images)`],
    ['Parameters', m.params.toLocaleString('en')],
    ['Multiply-adds', `${millions(m.macs)} per image`],
    ['Precision', precision],
    ['Version', m.version],
    ['File', `${m.file}, ${megabytes(m.bytes)}`],
    ['Runs on', runsOn(m)],
  ];
  const dl = $('facts');
  dl.replaceChildren();
  for (const [k, v] of facts) dl.append(el('dt', { text: k }), el('dd', { text: v, 'data-fact': k }));
}

function runsOn(m) {
  if (state.config.mode === 'server') {
    return `tpsnet-serve ${state.config.server.version} (${m.provider}), one view per image`;
  }
  const rt = state.config.runtime;
  return `this browser: onnxruntime-web ${rt.version}, WASM, ${wasmThreads()} thread(s)`;
}

function wasmThreads() {
  // Threads need cross-origin isolation (COOP/COEP headers); without it, one.
  return self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
}

function showTtaChoices(m) {
  const select = $('tta');
  const claim = claimMode(m);
  select.replaceChildren();
  for (const mode of Object.keys(TTA_VIEWS)) {
    const top1 = claimedTop1(m, mode);
    const label = `${TTA_LABELS[mode]}${top1 === null ? '' : `, ${top1.toFixed(2)} %`}${mode === claim ? ' (claimed)' : ''}`;
    select.append(el('option', { value: mode, text: label }));
  }
  select.value = claim;
  state.tta = claim;
}

function showDownload(m) {
  const p = $('download');
  if (state.config.mode !== 'browser') {
    p.hidden = true;
    return;
  }
  const rt = state.config.runtime.files.reduce((sum, f) => sum + f.bytes, 0);
  const loaded = state.sessions.has(m.name);
  p.textContent = `Download: ${megabytes(rt)} of onnxruntime-web (once) + ${megabytes(m.bytes)} for ${m.name}`
    + `${loaded ? ' (done; sha256 matches the manifest)' : '; the file is checked against the manifest\'s sha256 before use'}.`;
  p.hidden = false;
}

async function selectModel(name) {
  const m = state.config.models.find((x) => x.name === name);
  state.model = m;
  showFacts(m);
  if (state.config.mode === 'browser') showTtaChoices(m);
  showDownload(m);
  if (state.config.mode === 'browser') {
    try {
      await loadSession(m);
      showDownload(m);
    } catch (e) {
      state.run += 1;
      $('results').replaceChildren();
      setStatus(e instanceof UserError ? e.message : `Cannot start ${m.name}: ${e.message || e}`, true);
      document.body.dataset.idle = String(state.run);
      return;
    }
  }
  await classifyAll();
}

// ---------------------------------------------------------------- browser mode: the model

async function loadOrt() {
  if (!state.ort) {
    const ort = await import('./ort/ort.wasm.bundle.min.mjs');
    // The bundle holds the WASM loader; only the binary is fetched.
    ort.env.wasm.wasmPaths = { wasm: new URL('ort/ort-wasm-simd-threaded.wasm', document.baseURI).href };
    ort.env.wasm.numThreads = wasmThreads();
    ort.env.logLevel = 'error';
    state.ort = ort;
  }
  return state.ort;
}

async function sha256Hex(buffer) {
  if (!crypto.subtle) {
    throw new UserError('This page needs a secure context (https or localhost) to check the model\'s sha256; open it over https or from localhost.');
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function loadSession(m) {
  if (state.sessions.has(m.name)) return state.sessions.get(m.name);
  setStatus(`Downloading ${m.file} (${megabytes(m.bytes)})…`);
  const response = await fetch(m.url);
  if (!response.ok) throw new UserError(`Cannot download ${m.url}: HTTP ${response.status}.`);
  const bytes = await response.arrayBuffer();
  const actual = await sha256Hex(bytes);
  if (actual !== m.sha256.toLowerCase() || bytes.byteLength !== m.bytes) {
    throw new UserError(`${m.file} does not match its manifest: sha256 ${actual} (${bytes.byteLength} bytes), `
      + `the manifest says ${m.sha256} (${m.bytes} bytes). Not running it; rebuild the site with scripts/site.`);
  }
  setStatus(`Starting ONNX Runtime for ${m.name}…`);
  const ort = await loadOrt();
  const session = await ort.InferenceSession.create(new Uint8Array(bytes), {
    executionProviders: ['wasm'],
    graphOptimizationLevel: 'all',
  });
  state.sessions.set(m.name, session);
  setStatus(`${m.name} is ready: sha256 ${actual.slice(0, 16)}… matches the manifest.`);
  return session;
}

// ---------------------------------------------------------------- image headers

const u16be = (b, i) => (b[i] << 8) | b[i + 1];
const u16le = (b, i) => b[i] | (b[i + 1] << 8);
const u24le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32be = (b, i) => ((b[i] << 24) >>> 0) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3];
const i32le = (b, i) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
const ascii = (b, i, n) => String.fromCharCode(...b.subarray(i, i + n));

function jpegSize(b) {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) { i += 1; continue; }
    const marker = b[i + 1];
    if (marker === 0xff) { i += 1; continue; }
    const isSof = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isSof) return { width: u16be(b, i + 7), height: u16be(b, i + 5) };
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) { i += 2; continue; }
    i += 2 + u16be(b, i + 2);
  }
  return null;
}

function webpSize(b) {
  const chunk = ascii(b, 12, 4);
  if (chunk === 'VP8 ' && b.length >= 30) {
    return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  }
  if (chunk === 'VP8L' && b.length >= 25) {
    const [b0, b1, b2, b3] = [b[21], b[22], b[23], b[24]];
    return { width: 1 + (((b1 & 0x3f) << 8) | b0), height: 1 + (((b3 & 0xf) << 10) | (b2 << 2) | ((b1 & 0xc0) >> 6)) };
  }
  if (chunk === 'VP8X' && b.length >= 30) return { width: 1 + u24le(b, 24), height: 1 + u24le(b, 27) };
  return null;
}

/// The format and (where the header gives them cheaply) the size of an image file, from
/// its first bytes; null for anything the runtime does not decode.
function sniff(b) {
  if (b.length >= 24 && b[0] === 0x89 && ascii(b, 1, 3) === 'PNG') {
    return { format: 'PNG', width: u32be(b, 16), height: u32be(b, 20) };
  }
  if (b.length >= 10 && (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a')) {
    return { format: 'GIF', width: u16le(b, 6), height: u16le(b, 8) };
  }
  if (b.length >= 26 && ascii(b, 0, 2) === 'BM') {
    const os2 = i32le(b, 14) === 12;
    return { format: 'BMP', width: os2 ? u16le(b, 18) : Math.abs(i32le(b, 18)), height: os2 ? u16le(b, 20) : Math.abs(i32le(b, 22)) };
  }
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { format: 'JPEG', ...jpegSize(b) };
  if (b.length >= 16 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 4) === 'WEBP') return { format: 'WebP', ...webpSize(b) };
  if (b.length >= 4 && (ascii(b, 0, 4) === 'II*\0' || ascii(b, 0, 4) === 'MM\0*')) return { format: 'TIFF' };
  return null;
}

/// Checks a file before anything is sent or decoded; the messages match the server's.
async function checkFile(file) {
  const limits = state.config.limits;
  if (file.size === 0) throw new UserError(`${file.name} is empty (0 bytes); choose the image file itself.`);
  if (limits.max_body_bytes && file.size + 1024 > limits.max_body_bytes) {
    throw new UserError(`${file.name} is too large: ${megabytes(file.size)}; this ${state.config.mode === 'server' ? 'server' : 'page'} accepts up to ${megabytes(limits.max_body_bytes - 1024)} per image. The model sees 32×32 pixels, so shrink it first.`);
  }
  const head = new Uint8Array(await file.slice(0, 65536).arrayBuffer());
  const info = sniff(head);
  if (!info) {
    throw new UserError(`${file.name} is not an image this model can read (unrecognised format); supported: ${FORMATS}.`);
  }
  const side = limits.max_image_side;
  if (info.width > side || info.height > side) {
    throw new UserError(`${file.name} is too large: ${info.width}×${info.height} pixels; the limit is ${side}×${side}. The model sees 32×32 pixels, so shrink it first.`);
  }
  return info;
}

// ---------------------------------------------------------------- browser mode: preprocessing

function triangle(x) {
  const a = Math.abs(x);
  return a < 1 ? f32(1 - a) : 0;
}

/// The `image` crate's resampling weights (imageops::sample, Triangle filter, support 1)
/// for one axis, in f32 as the crate computes them.
function resampleWeights(inLen, outLen) {
  const ratio = f32(inLen / outLen);
  const sratio = ratio < 1 ? 1 : ratio;
  const support = sratio;
  const rows = [];
  for (let o = 0; o < outLen; o++) {
    const centre = f32(f32(o + 0.5) * ratio);
    const left = Math.min(Math.max(Math.floor(f32(centre - support)), 0), inLen - 1);
    const right = Math.min(Math.max(Math.ceil(f32(centre + support)), left + 1), inLen);
    const origin = f32(centre - 0.5);
    const ws = [];
    let sum = 0;
    for (let i = left; i < right; i++) {
      const w = triangle(f32(f32(i - origin) / sratio));
      ws.push(w);
      sum = f32(sum + w);
    }
    rows.push({ left, ws: ws.map((w) => f32(w / sum)) });
  }
  return rows;
}

/// imageops::resize(rgb, 32, 32, Triangle): rows first into f32, then columns, rounded to
/// bytes. `rgb` is width*height*3 bytes.
function resizeRgb(rgb, width, height) {
  const vertical = resampleWeights(height, SIDE);
  const tmp = new Float32Array(width * SIDE * 3);
  for (let oy = 0; oy < SIDE; oy++) {
    const { left, ws } = vertical[oy];
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let t = 0;
        for (let k = 0; k < ws.length; k++) t = f32(t + f32(rgb[((left + k) * width + x) * 3 + c] * ws[k]));
        tmp[(oy * width + x) * 3 + c] = t;
      }
    }
  }
  const horizontal = resampleWeights(width, SIDE);
  const out = new Uint8Array(PLANE * 3);
  for (let ox = 0; ox < SIDE; ox++) {
    const { left, ws } = horizontal[ox];
    for (let y = 0; y < SIDE; y++) {
      for (let c = 0; c < 3; c++) {
        let t = 0;
        for (let k = 0; k < ws.length; k++) t = f32(t + f32(tmp[(y * width + left + k) * 3 + c] * ws[k]));
        out[(y * SIDE + ox) * 3 + c] = Math.round(Math.min(Math.max(t, 0), 255));
      }
    }
  }
  return out;
}

/// Decodes a file to RGB bytes (alpha dropped, as the runtime's to_rgb8 does), without
/// colour management (the runtime applies none).
async function decodeRgb(file, info) {
  if (info.format === 'TIFF') {
    throw new UserError(`${file.name} is a TIFF; browsers do not decode TIFF. Convert it to PNG, or use tpsnet-serve, which reads it.`);
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new UserError(`${file.name} is not a readable image (the browser cannot decode it); supported: ${FORMATS}.`);
  }
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width, height };
}

/// The model input of one image: CHW floats in [0, 1] (runtime::preprocess::InputImage).
async function preprocess(file, info) {
  const { rgb, width, height } = await decodeRgb(file, info);
  const small = width === SIDE && height === SIDE ? rgb : resizeRgb(rgb, width, height);
  const chw = new Float32Array(IMAGE_FLOATS);
  for (let i = 0; i < PLANE; i++) {
    for (let c = 0; c < 3; c++) chw[c * PLANE + i] = small[i * 3 + c] / 255;
  }
  return chw;
}

/// zoo::tta::apply_view: shift by (d, d) with reflect padding, then mirror.
function applyView(chw, view, out) {
  const reflect = (i, d) => {
    let j = Math.abs(i - d);
    if (j >= SIDE) j = 2 * (SIDE - 1) - j;
    return j;
  };
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < SIDE; y++) {
      const sy = reflect(y, view.shift);
      for (let x = 0; x < SIDE; x++) {
        const xm = view.mirror ? SIDE - 1 - x : x;
        out[c * PLANE + y * SIDE + x] = chw[c * PLANE + sy * SIDE + reflect(xm, view.shift)];
      }
    }
  }
}

function softmax(logits) {
  const max = logits.reduce((a, b) => (b > a ? b : a), -Infinity);
  const exps = logits.map((v) => f32(Math.exp(f32(v - max))));
  let sum = 0;
  for (const e of exps) sum = f32(sum + e);
  return exps.map((e) => f32(e / sum));
}

function topK(probs, classes) {
  const order = probs.map((_, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  return order.slice(0, Math.min(TOP_K, probs.length)).map((i) => ({ index: i, class: classes[i], probability: probs[i] }));
}

function normalize(chw, input) {
  const n = input.normalization;
  if (!n || n.in_graph) return chw;
  return chw.map((v, i) => f32(f32(v - f32(n.mean[Math.floor(i / PLANE) % 3])) / f32(n.std[Math.floor(i / PLANE) % 3])));
}

async function classifyInBrowser(m, file, info) {
  const session = await loadSession(m);
  const started = performance.now();
  const chw = await preprocess(file, info);
  const prepared = performance.now();
  const views = TTA_VIEWS[state.tta];
  const batch = new Float32Array(views.length * IMAGE_FLOATS);
  views.forEach((v, i) => applyView(chw, v, batch.subarray(i * IMAGE_FLOATS, (i + 1) * IMAGE_FLOATS)));
  const input = new state.ort.Tensor('float32', normalize(batch, m.input), [views.length, 3, SIDE, SIDE]);
  const outputs = await session.run({ [m.input.name]: input });
  const logits = outputs[m.output.name].data;
  const classes = m.classes.length;
  const mean = new Array(classes).fill(0);
  views.forEach((v, i) => {
    for (let c = 0; c < classes; c++) mean[c] = f32(mean[c] + f32(v.weight * logits[i * classes + c]));
  });
  const finished = performance.now();
  return {
    top: topK(softmax(mean), m.classes),
    preview: previewUrl(chw),
    timing: `in this browser: ${(finished - prepared).toFixed(1)} ms (${views.length} view${views.length > 1 ? 's' : ''}) + ${(prepared - started).toFixed(1)} ms to decode`,
  };
}

function previewUrl(chw) {
  const canvas = document.createElement('canvas');
  canvas.width = SIDE;
  canvas.height = SIDE;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(SIDE, SIDE);
  for (let i = 0; i < PLANE; i++) {
    for (let c = 0; c < 3; c++) img.data[i * 4 + c] = Math.round(chw[c * PLANE + i] * 255);
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL('image/png');
}

// ---------------------------------------------------------------- server mode

function serverMs(header) {
  const match = /(?:^|,)\s*app;dur=([0-9.]+)/.exec(header || '');
  return match ? Number(match[1]) : null;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch {
    // Not JSON: fall through to the status.
  }
  return `the server answered HTTP ${response.status}`;
}

async function classifyOnServer(m, file) {
  const form = new FormData();
  form.append('image', file, file.name);
  const started = performance.now();
  const url = `v2/models/${encodeURIComponent(m.name)}/classify?top_k=${TOP_K}`;
  const [response, preview] = await Promise.all([
    fetch(url, { method: 'POST', body: form }),
    fetch('page/preview', { method: 'POST', body: file }),
  ]);
  const roundTrip = performance.now() - started;
  if (!response.ok) throw new UserError(`${file.name}: ${await errorText(response)}`);
  const body = await response.json();
  const p = body.predictions[0];
  const ms = serverMs(response.headers.get('server-timing'));
  return {
    top: p.top_k,
    preview: preview.ok ? objectUrl(await preview.blob()) : null,
    timing: `server: ${ms === null ? '?' : ms.toFixed(1)} ms; round trip ${roundTrip.toFixed(1)} ms`,
  };
}

// ---------------------------------------------------------------- results

function resultCard(file) {
  const li = el('li', { class: 'result', 'data-file': file.name, 'data-state': 'running', 'aria-busy': 'true' });
  li.append(el('h3', { text: file.name }), el('p', { class: 'pending', text: 'Classifying…' }));
  return li;
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

function picture(src, alt, caption, className) {
  const img = el('img', { class: className, alt, src });
  img.addEventListener('error', () => img.replaceWith(el('span', { class: 'no-preview', text: 'the browser cannot show this format' })), { once: true });
  return el('figure', {}, [img, el('figcaption', { text: caption })]);
}

function showResult(li, file, result) {
  const m = state.model;
  li.dataset.state = 'done';
  li.dataset.model = m.name;
  li.dataset.tta = state.config.mode === 'server' ? 'none' : state.tta;
  li.removeAttribute('aria-busy');
  const pictures = el('div', { class: 'pictures' }, [picture(objectUrl(file), `${file.name} as uploaded`, 'uploaded', 'original')]);
  if (result.preview) {
    pictures.append(picture(result.preview, `${file.name} at 32×32 pixels, as the model saw it`, 'what the model saw (32×32)', 'seen'));
  }
  const list = el('ol', { class: 'topk', 'aria-label': `${m.name}'s five most likely classes for ${file.name}` });
  for (const s of result.top) {
    const bar = el('span', { class: 'bar' });
    bar.style.width = `${(100 * s.probability).toFixed(2)}%`;
    list.append(el('li', { class: 'class-row', 'data-index': String(s.index), 'data-probability': String(s.probability) }, [
      el('span', { class: 'label', text: s.class }),
      el('span', { class: 'track', 'aria-hidden': 'true' }, [bar]),
      el('span', { class: 'value', text: percent(s.probability) }),
    ]));
  }
  li.querySelector('.pending').replaceWith(pictures, list, el('p', { class: 'timing', text: `${m.name}: ${result.timing}` }));
}

function showError(li, message) {
  li.dataset.state = 'error';
  li.removeAttribute('aria-busy');
  li.querySelector('.pending').replaceWith(el('p', { class: 'error', role: 'alert', text: message }));
}

async function classifyOne(file, li, run) {
  try {
    const info = await checkFile(file);
    const m = state.model;
    const result = state.config.mode === 'server'
      ? await classifyOnServer(m, file)
      : await classifyInBrowser(m, file, info);
    if (run === state.run) showResult(li, file, result);
  } catch (e) {
    const message = e instanceof UserError ? e.message : `${file.name}: ${e.message || e}`;
    if (run === state.run) showError(li, message);
  }
}

async function classifyAll() {
  const run = ++state.run;
  const list = $('results');
  list.replaceChildren();
  for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
  if (!state.files.length || !state.model) return;
  const cards = state.files.map((file) => {
    const li = resultCard(file);
    list.append(li);
    return li;
  });
  setStatus(`Classifying ${state.files.length} image(s) with ${state.model.name}…`);
  const parallel = state.config.mode === 'server' ? PARALLEL_REQUESTS : 1;
  let next = 0;
  const worker = async () => {
    while (next < state.files.length && run === state.run) {
      const i = next++;
      await classifyOne(state.files[i], cards[i], run);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  if (run !== state.run) return;
  const failed = cards.filter((li) => li.dataset.state === 'error').length;
  setStatus(`${state.model.name}: ${cards.length - failed} image(s) classified${failed ? `, ${failed} refused (see below)` : ''}.`);
  document.body.dataset.idle = String(run);
}

function addFiles(files) {
  const images = Array.from(files);
  if (!images.length) return;
  state.files = images;
  $('clear').disabled = false;
  classifyAll();
}

// ---------------------------------------------------------------- start

function wireInputs() {
  $('model').addEventListener('change', (e) => selectModel(e.target.value));
  $('tta').addEventListener('change', (e) => {
    state.tta = e.target.value;
    classifyAll();
  });
  $('files').addEventListener('change', (e) => {
    addFiles(e.target.files);
    e.target.value = '';
  });
  $('clear').addEventListener('click', () => {
    state.files = [];
    state.run += 1;
    $('results').replaceChildren();
    $('clear').disabled = true;
    setStatus('Cleared.');
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('dragging');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('dragging');
    addFiles(e.dataTransfer.files);
  });
}

async function main() {
  wireInputs();
  let config;
  try {
    const response = await fetch('models.json', { cache: 'no-cache' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch (e) {
    $('mode').textContent = `Cannot read models.json (${e.message}): open this page from tpsnet-serve or from a folder built by scripts/site.`;
    return;
  }
  state.config = config;
  document.body.dataset.mode = config.mode;
  $('mode').textContent = config.mode === 'server'
    ? `Server mode: images are classified by tpsnet-serve ${config.server.version}; ${config.models.length} model(s) served.`
    : `Browser mode: the models run in this browser with onnxruntime-web ${config.runtime.version} (WASM); images never leave this computer.`;
  $('tta-field').hidden = config.mode !== 'browser';
  $('tiff-hint').hidden = config.mode === 'browser';
  const select = $('model');
  for (const m of config.models) select.append(el('option', { value: m.name, text: modelLabel(m) }));
  select.disabled = false;
  if (!config.models.length) {
    setStatus('No models to show.');
    return;
  }
  await selectModel(config.models[0].name);
  document.body.dataset.ready = 'true';
}

main();
