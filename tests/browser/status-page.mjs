// Drives Debian's chromium (never a browser of Playwright's own) through jwksd's status
// page: login with a wrong and the right token, the timeline, a rotation with its
// confirmation, CSRF attempts (no token, a wrong token, a form on another origin),
// axe-core, screenshots at phone and desktop widths, logout. Started by
// tests/api/status_page.rs, which checks the outcome through the admin API.
//
// Input (environment): JWKSD_URL (the private listener), JWKSD_ADMIN_TOKEN,
// SCREENSHOT_DIR, ROTATE_KEYSET (rotated through the page), CSRF_KEYSET (the target of the
// refused forms). Output: one JSON line on stdout, the report; exit 1 with a message on
// stderr when a step fails.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const base = process.env.JWKSD_URL;
const adminToken = process.env.JWKSD_ADMIN_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const rotateKeyset = process.env.ROTATE_KEYSET;
const csrfKeyset = process.env.CSRF_KEYSET;
const COOKIE = '__Host-jwksd_session';

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const report = { csp_violations: [], page_errors: [] };

// This machine's network is closed: nothing in the browser may try to reach out.
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jwksd-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1440, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

// A page on another origin (same host, another port: same site, so the SameSite cookie
// alone would not stop it) that posts to jwksd.
let attackerForm = '';
const attacker = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(attackerForm);
});
await new Promise((resolve) => attacker.listen(0, '127.0.0.1', resolve));
const attackerUrl = `http://127.0.0.1:${attacker.address().port}/`;

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) report.csp_violations.push(msg.text());
  });
  page.on('pageerror', (err) => report.page_errors.push(String(err)));

  const submit = async (action) => {
    const [response] = await Promise.all([page.waitForNavigation(), action()]);
    return response;
  };
  const sessionCookie = async () =>
    (await context.cookies(base)).find((c) => c.name === COOKIE);

  // The login form.
  let response = await page.goto(`${base}/`);
  check(response.status() === 200, `GET / answered ${response.status()}`);
  const headers = response.headers();
  report.headers = {
    csp: headers['content-security-policy'],
    frame: headers['x-frame-options'],
    referrer: headers['referrer-policy'],
    cache: headers['cache-control'],
  };
  check(await page.getByLabel('Admin token').isVisible(), 'no labelled token field');

  // A wrong password: the form again, the error, a 401, no cookie.
  await page.getByLabel('Admin token').fill('not-the-admin-token-at-all-not-even-close');
  response = await submit(() => page.getByRole('button', { name: 'Sign in' }).click());
  report.wrong_login_status = response.status();
  report.wrong_login_error = (await page.locator('#login-error').textContent()).trim();
  report.cookie_after_wrong_login = Boolean(await sessionCookie());
  check(await page.getByLabel('Admin token').isVisible(), 'no form after a wrong token');

  // The right token.
  await page.getByLabel('Admin token').fill(adminToken);
  response = await submit(() => page.getByRole('button', { name: 'Sign in' }).click());
  check(response.status() === 200, `after login: ${response.status()}`);
  check((await page.locator('h1').textContent()).includes('Key status'), 'not the status page');
  const cookie = await sessionCookie();
  check(cookie, 'no session cookie after login');
  report.cookie = { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite, path: cookie.path };

  // The timeline as a person reads it: each key's state badge and kid.
  report.timeline = await page.$$eval('section.keyset', (sections) =>
    sections.map((s) => ({
      keyset: s.dataset.keyset,
      heading: s.querySelector('h2').textContent.trim(),
      jwks_url: s.querySelector('code.url').textContent.trim(),
      next_rotation: [...s.querySelectorAll('dl.facts dt')]
        .find((dt) => dt.textContent === 'Next rotation')?.nextElementSibling.textContent.trim(),
      keys: [...s.querySelectorAll('li.key')].map((li) => ({
        kid: li.querySelector('code.kid').textContent.trim(),
        state: li.querySelector('.badge').textContent.trim(),
      })),
      chart: Boolean(s.querySelector('svg.chart')),
    })));
  report.refusals_listed = await page.$$eval('section.refusals tbody tr', (rows) =>
    rows.map((r) => r.textContent));

  // Accessibility: axe-core on the status page (injected through the DevTools protocol,
  // which the page's CSP does not govern; the page itself runs no script).
  const axe = async (label) => {
    await page.evaluate(axeSource);
    const result = await page.evaluate(async () => {
      // eslint-disable-next-line no-undef
      const r = await axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
    });
    report.axe = report.axe || {};
    report.axe[label] = result;
  };
  await axe('status');

  // Screenshots: desktop, then phone (one column, nothing wider than the screen).
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, 'status-desktop.png') });
  await page.screenshot({ path: path.join(shots, 'status-desktop-full.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  report.phone_overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(shots, 'status-phone.png'), fullPage: true });
  await axe('status-phone');
  await page.setViewportSize({ width: 1440, height: 900 });

  // A rotation, through its confirmation step.
  const csrf = await page.locator('form.logout input[name=csrf]').inputValue();
  await submit(() => page.locator(`section[data-keyset="${rotateKeyset}"] a.button`, { hasText: 'Rotate' }).click());
  report.rotate_consequence = (await page.locator('#consequence').textContent()).trim();
  await axe('confirm-rotate');
  await page.screenshot({ path: path.join(shots, 'confirm-rotate.png') });
  response = await submit(() => page.getByRole('button', { name: /^Rotate now/ }).click());
  report.rotate_status = response.status();
  report.rotate_outcome = (await page.locator('#outcome').textContent()).trim();
  report.rotate_promoted = (await page.locator('dl.facts dd').first().textContent()).trim();

  // CSRF: forms the page did not make, each aimed at a forced rotation.
  const target = `${base}/status/keysets/${csrfKeyset}/rotate`;
  const postFrom = async (fields) => {
    await page.goto(`${base}/`);
    return submit(() => page.evaluate(({ target, fields }) => {
      const form = document.createElement('form');
      form.method = 'post';
      form.action = target;
      for (const [name, value] of Object.entries(fields)) {
        const input = document.createElement('input');
        input.type = 'hidden';
        input.name = name;
        input.value = value;
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
    }, { target, fields }));
  };
  report.csrf = {};
  response = await postFrom({ force: 'true' });
  report.csrf.without_token = { status: response.status(), heading: (await page.locator('h1').textContent()).trim() };
  response = await postFrom({ force: 'true', csrf: 'not-the-token' });
  report.csrf.wrong_token = { status: response.status(), heading: (await page.locator('h1').textContent()).trim() };
  // From another origin, even with the right token (as if it had leaked).
  attackerForm = `<!doctype html><html lang="en"><title>elsewhere</title>
    <form method="post" action="${target}"><input type="hidden" name="csrf" value="${csrf}">
    <input type="hidden" name="force" value="true"><button type="submit">Win a prize</button></form></html>`;
  await page.goto(attackerUrl);
  response = await submit(() => page.getByRole('button', { name: 'Win a prize' }).click());
  report.csrf.other_origin = { status: response.status(), heading: (await page.locator('h1').textContent()).trim() };

  // Logout: back to the form, no cookie.
  await page.goto(`${base}/`);
  await submit(() => page.getByRole('button', { name: 'Sign out' }).click());
  report.after_logout_form = await page.getByLabel('Admin token').isVisible();
  report.cookie_after_logout = Boolean(await sessionCookie());
  await axe('login');
  await page.screenshot({ path: path.join(shots, 'login.png') });

  console.log(JSON.stringify(report));
} catch (err) {
  console.error(`browser test failed: ${err.stack || err}`);
  console.error(`report so far: ${JSON.stringify(report)}`);
  process.exitCode = 1;
} finally {
  attacker.close();
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
