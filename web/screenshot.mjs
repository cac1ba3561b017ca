// The README's screenshot of the page, from pictures drawn here (no dataset images):
//
//   node web/screenshot.mjs URL OUT.png
//
// URL is the page: tpsnet-serve's (http://127.0.0.1:8000/) or a static site's. Four
// pictures (a boat at sunset, a red car, a frog, an aeroplane) are drawn on a canvas in
// Chromium, chosen through the page's file input, and the page is captured once every
// result is in.

import { chromium } from 'playwright-core';

const [url, out] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node web/screenshot.mjs URL OUT.png');
  process.exit(2);
}
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// Runs in the page: each drawing returns a PNG as base64.
function drawAll() {
  const png = (w, h, draw) => {
    const c = document.createElement('canvas');
    c.width = w;
    c.height = h;
    draw(c.getContext('2d'), w, h);
    return c.toDataURL('image/png').split(',')[1];
  };
  const gradient = (g, stops, h) => {
    const lin = g.createLinearGradient(0, 0, 0, h);
    stops.forEach(([at, colour]) => lin.addColorStop(at, colour));
    return lin;
  };
  return [
    ['boat-at-sunset.png', png(96, 72, (g, w, h) => {
      g.fillStyle = gradient(g, [[0, '#f7b267'], [0.6, '#f4845f']], h);
      g.fillRect(0, 0, w, h);
      g.fillStyle = '#2a6f97';
      g.fillRect(0, 44, w, h - 44);
      g.fillStyle = '#fff8e7';
      g.beginPath(); g.moveTo(48, 8); g.lineTo(48, 42); g.lineTo(70, 42); g.fill();
      g.fillStyle = '#3d2c2e';
      g.beginPath(); g.moveTo(22, 42); g.lineTo(78, 42); g.lineTo(70, 52); g.lineTo(30, 52); g.fill();
    })],
    ['red-car.png', png(80, 60, (g, w, h) => {
      g.fillStyle = '#cfd8dc'; g.fillRect(0, 0, w, h);
      g.fillStyle = '#607d8b'; g.fillRect(0, 44, w, h - 44);
      g.fillStyle = '#c62828';
      g.fillRect(8, 28, 64, 16);
      g.beginPath(); g.moveTo(20, 28); g.lineTo(28, 16); g.lineTo(52, 16); g.lineTo(62, 28); g.fill();
      g.fillStyle = '#90caf9'; g.fillRect(30, 19, 9, 8); g.fillRect(42, 19, 9, 8);
      g.fillStyle = '#212121';
      for (const x of [22, 58]) { g.beginPath(); g.arc(x, 44, 7, 0, 2 * Math.PI); g.fill(); }
    })],
    ['frog.png', png(64, 64, (g, w, h) => {
      g.fillStyle = '#6d4c41'; g.fillRect(0, 0, w, h);
      g.fillStyle = '#558b2f';
      g.beginPath(); g.ellipse(32, 38, 22, 15, 0, 0, 2 * Math.PI); g.fill();
      for (const x of [22, 42]) {
        g.fillStyle = '#558b2f'; g.beginPath(); g.arc(x, 24, 7, 0, 2 * Math.PI); g.fill();
        g.fillStyle = '#111'; g.beginPath(); g.arc(x, 23, 3, 0, 2 * Math.PI); g.fill();
      }
    })],
    ['aeroplane.png', png(96, 64, (g, w, h) => {
      g.fillStyle = gradient(g, [[0, '#90caf9'], [1, '#e3f2fd']], h);
      g.fillRect(0, 0, w, h);
      g.fillStyle = '#eceff1';
      g.beginPath(); g.ellipse(48, 32, 34, 6, 0, 0, 2 * Math.PI); g.fill();
      g.fillStyle = '#b0bec5';
      g.beginPath(); g.moveTo(40, 32); g.lineTo(56, 32); g.lineTo(44, 8); g.fill();
      g.beginPath(); g.moveTo(40, 32); g.lineTo(56, 32); g.lineTo(44, 56); g.fill();
      g.beginPath(); g.moveTo(14, 32); g.lineTo(22, 32); g.lineTo(14, 20); g.fill();
    })],
  ];
}

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: FLAGS, headless: true });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 120_000 });
  const drawn = await page.evaluate(drawAll);
  await page.setInputFiles('#files', drawn.map(([name, b64]) => ({ name, mimeType: 'image/png', buffer: Buffer.from(b64, 'base64') })));
  await page.waitForFunction((n) => {
    const items = [...document.querySelectorAll('#results > li')];
    return items.length === n && items.every((li) => li.dataset.state === 'done');
  }, drawn.length, { timeout: 120_000 });
  await page.screenshot({ path: out, fullPage: true });
  console.error(`screenshot: ${out}`);
} finally {
  await browser.close();
}
