// The operator console in headless Chromium (Debian's `chromium`, driven by puppeteer-core),
// against a server on the demo agency (run by crates/testkit/tests/it/console.rs, which
// seeds the data and passes the facts below). Screenshots of every page go to
// SCREENSHOT_DIR (kept out of git).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import puppeteer from 'puppeteer-core';

const BASE = process.env.SUPABASE_URL;
const SERVICE = process.env.SUPABASE_SERVICE_ROLE_KEY;
const ANON = process.env.SUPABASE_ANON_KEY;
const EMAIL = process.env.CONSOLE_EMAIL;
const PASSWORD = process.env.CONSOLE_PASSWORD;
const MEMBER_EMAIL = process.env.VIEW_AS_EMAIL; // a member of org A
const ORG_A = process.env.ORG_A;
const ORG_A_CLIENTS = Number(process.env.ORG_A_CLIENTS);
const ORG_B_CLIENT = process.env.ORG_B_CLIENT; // a client name only org B has
const XSS = '<img src=x onerror=alert(1)>';
const SHOTS = process.env.SCREENSHOT_DIR;
mkdirSync(SHOTS, { recursive: true });

let browser;
let page;
const alerts = [];
const pageErrors = [];

before(async () => {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    defaultViewport: { width: 1280, height: 800 },
  });
  page = await browser.newPage();
  page.setDefaultTimeout(20000);
  page.on('dialog', async (d) => {
    if (d.type() === 'alert') alerts.push(d.message());
    if (d.type() === 'prompt') await d.accept('e2e snippet'); else await d.accept();
  });
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
});

async function shot(name) {
  const file = join(SHOTS, `${name}.png`);
  // The transient notices would cover the page in the docs' pictures.
  await page.evaluate(() => document.getElementById('notices')?.replaceChildren()).catch(() => {});
  await page.screenshot({ path: file });
  return file;
}

/** Waits until no loading indicator is left in the main area. */
async function settled() {
  await page.waitForFunction(() => !document.querySelector('main .loading') && !document.querySelector('[aria-busy="true"]'));
}

async function clickText(text, scope = 'main') {
  await page.waitForFunction((t, s) => [...document.querySelectorAll(`${s} button, ${s} a`)].some((b) => b.textContent.trim() === t && !b.disabled), {}, text, scope);
  await page.evaluate((t, s) => [...document.querySelectorAll(`${s} button, ${s} a`)].find((b) => b.textContent.trim() === t && !b.disabled).click(), text, scope);
}

async function pagerText() {
  return page.$eval('.pager .muted', (e) => e.textContent);
}

/** The values of one column, by header text, of the first grid that has that column. */
async function column(name) {
  return page.evaluate((n) => {
    for (const table of document.querySelectorAll('table.grid')) {
      const heads = [...table.querySelectorAll('thead th')].map((th) => th.textContent.replace(/[▲▼]/g, '').trim());
      const i = heads.indexOf(n);
      if (i >= 0) return [...table.querySelectorAll('tbody tr')].map((tr) => tr.children[i].textContent);
    }
    throw new Error(`no grid has a column ${n}`);
  }, name);
}

async function gotoPage(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await settled();
}

/** Picks "a user…" in the view-as control and the user with this e-mail. */
async function viewAsUser(email) {
  await page.select('select[aria-label="View as"]', 'user');
  await page.type('input[aria-label="User e-mail for view as"]', email);
  await page.waitForFunction((e) => [...document.querySelectorAll('select[aria-label="Matching users"] option')].some((o) => o.textContent === e), {}, email);
  const id = await page.$eval('select[aria-label="Matching users"]', (s, e) => [...s.options].find((o) => o.textContent === e).value, email);
  await page.select('select[aria-label="Matching users"]', id);
}

test('the console in a browser: sign in, tables, view as, SQL, auth, storage, audit', async (top) => {
  // Each step leaves a screenshot of the page it failed on.
  const t = {
    test: (name, fn) => top.test(name, async () => {
      try { await fn(); } catch (e) {
        await shot(`failed-${name.replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
        throw new Error(`${e.message}\n--- page text ---\n${await page.$eval('main', (m) => m.innerText.slice(0, 1500)).catch(() => '')}`, { cause: e });
      }
    }),
  };
  await t.test('sign in', async () => {
    await page.goto(`${BASE}/console/`);
    await page.waitForSelector('form.signin input[type=email]');
    await shot('00-sign-in');
    await page.type('input[type=email]', EMAIL);
    await page.type('input[type=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForSelector('nav a[data-page=tables][aria-current=page]');
    await settled();
    // The session cookie is invisible to scripts (httpOnly).
    assert.equal(await page.evaluate(() => document.cookie), '');
  });

  await t.test('first load: bytes transferred and time to interactive', async () => {
    // A fresh tab with the session cookie, the cache off: every byte of the console's first
    // load (page, CSS, modules, the first API calls) counted by the DevTools protocol.
    const fresh = await browser.newPage();
    await fresh.setCacheEnabled(false);
    const cdp = await fresh.target().createCDPSession();
    await cdp.send('Network.enable');
    let bytes = 0;
    const requests = [];
    cdp.on('Network.loadingFinished', (e) => { bytes += e.encodedDataLength; });
    cdp.on('Network.requestWillBeSent', (e) => requests.push(e.request.url.replace(BASE, '')));
    await fresh.goto(`${BASE}/console/`);
    // Interactive: the tables page is drawn with its list, and nothing is loading.
    await fresh.waitForSelector('nav a[data-page=tables][aria-current=page]');
    await fresh.waitForFunction(() => document.querySelector('ul.tables li') && !document.querySelector('main .loading'));
    const timing = await fresh.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      return { tti_ms: performance.now(), dom_content_loaded_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd };
    });
    const result = { bytes, requests: requests.length, ...timing };
    writeFileSync(join(SHOTS, 'first-load.json'), JSON.stringify({ ...result, urls: requests }, null, 2));
    assert.ok(bytes > 10000 && bytes < 500000, `first load ${bytes} bytes`);
    await fresh.close();
    await page.bringToFront();
  });

  await t.test('the page is styled, not blank', async () => {
    const style = await page.evaluate(() => {
      const nav = document.querySelector('nav a[aria-current=page]');
      return {
        layout: getComputedStyle(document.querySelector('.layout')).display,
        navBg: getComputedStyle(nav).backgroundColor,
        navColor: getComputedStyle(nav).color,
        header: getComputedStyle(document.querySelector('header.top')).borderBottomStyle,
        text: document.body.innerText.length,
      };
    });
    assert.equal(style.layout, 'grid', 'the stylesheet did not apply');
    assert.notEqual(style.navBg, 'rgba(0, 0, 0, 0)');
    assert.notEqual(style.navBg, style.navColor);
    assert.equal(style.header, 'solid');
    assert.ok(style.text > 200, 'the page is (nearly) blank');
    const file = await shot('01-tables');
    // A blank screenshot of 1280×800 compresses to a few kilobytes.
    assert.ok(statSync(file).size > 15000, `screenshot ${file} looks blank (${statSync(file).size} bytes)`);
  });

  await t.test('browse clients: filter, sort, page', async () => {
    await gotoPage('#/tables/public/clients');
    await page.waitForSelector('table.grid tbody tr');
    assert.match(await pagerText(), /page 1 · 100 rows/);
    // Next page (keyset), then back.
    await clickText('Next page →');
    await page.waitForFunction(() => /page 2 ·/.test(document.querySelector('.pager .muted')?.textContent || ''));
    await settled();
    await clickText('← Previous');
    await page.waitForFunction(() => /page 1 ·/.test(document.querySelector('.pager .muted')?.textContent || ''));
    // Sort by name, descending.
    await page.evaluate(() => [...document.querySelectorAll('th button.sort')].find((b) => b.textContent.trim() === 'name').click());
    await settled();
    await page.evaluate(() => [...document.querySelectorAll('th button.sort')].find((b) => b.textContent.startsWith('name')).click());
    await page.waitForSelector('th[aria-sort=descending]');
    await settled();
    const names = await column('name');
    const sorted = [...names].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
    assert.deepEqual(names, sorted);
    // Filter: name ilike "Bulk 01" (the seeded bulk rows).
    await clickText('+ Filter');
    await page.select('.filter select[aria-label="Filter column"]', 'name');
    await page.select('.filter select[aria-label="Filter operator"]', 'ilike');
    await page.type('.filter input[aria-label="Filter value"]', 'Bulk 01');
    await clickText('Apply');
    await page.waitForFunction(() => /page 1 · 10 rows/.test(document.querySelector('.pager .muted')?.textContent || ''));
    for (const n of await column('name')) assert.match(n, /^Bulk 01\d$/);
    await shot('02-tables-filtered');
  });

  await t.test('an XSS payload in a name renders as text', async () => {
    await page.$eval('.filter input[aria-label="Filter value"]', (i) => { i.value = ''; });
    await page.type('.filter input[aria-label="Filter value"]', 'onerror');
    await clickText('Apply');
    await page.waitForFunction(() => /page 1 · 1 rows/.test(document.querySelector('.pager .muted')?.textContent || ''));
    assert.deepEqual(await column('name'), [XSS]);
    assert.equal(await page.$('img[src=x]'), null, 'the payload became an element');
    assert.deepEqual(alerts, []);
  });

  await t.test('edit a row and see it saved', async () => {
    await page.click('table.grid tbody tr button[aria-label="Edit row"]');
    await page.waitForSelector('form.editor');
    const notes = await page.$('form.editor [data-column=notes]');
    await notes.evaluate((e) => { e.value = ''; });
    await notes.type('checked in the browser test');
    await clickText('Save changes');
    await page.waitForFunction(() => [...document.querySelectorAll('.notice')].some((n) => n.textContent === 'Row saved'));
    await settled();
    const r = await fetch(`${BASE}/rest/v1/clients?select=notes&name=eq.${encodeURIComponent(XSS)}`, { headers: { apikey: SERVICE, authorization: `Bearer ${SERVICE}` } });
    assert.deepEqual(await r.json(), [{ notes: 'checked in the browser test' }]);
    assert.ok((await column('notes')).includes('checked in the browser test'));
  });

  await t.test('view as a member of org A sees none of org B', async () => {
    await page.evaluate(() => { location.hash = '#/tables'; });
    await gotoPage('#/tables/public/clients');
    await page.waitForSelector('table.grid tbody tr');
    await viewAsUser(MEMBER_EMAIL);
    await page.waitForFunction(() => / as user:/.test(document.querySelector('.pager .muted')?.textContent || ''));
    await settled();
    const orgs = new Set(await column('org_id'));
    assert.deepEqual([...orgs], [ORG_A]);
    // Every page, not just the first.
    const seen = [];
    for (;;) {
      seen.push(...(await column('name')));
      const next = await page.$eval('.pager button:last-child', (b) => !b.disabled);
      if (!next) break;
      const before = await pagerText();
      await clickText('Next page →');
      await page.waitForFunction((b) => document.querySelector('.pager .muted')?.textContent !== b, {}, before);
      await settled();
    }
    assert.equal(seen.length, ORG_A_CLIENTS);
    assert.ok(!seen.includes(ORG_B_CLIENT));
    await shot('03-tables-view-as');
  });

  await t.test('SQL as a user sees row-level security apply', async () => {
    await gotoPage('#/sql');
    await page.$eval('textarea.sql', (e) => { e.value = ''; });
    await page.type('textarea.sql', 'select count(*) as n, count(distinct org_id) as orgs from clients');
    await clickText('Run (Ctrl+Enter)');
    await page.waitForSelector('.results table.grid');
    const all = await column('n');
    assert.ok(Number(all[0]) > ORG_A_CLIENTS);
    await viewAsUser(MEMBER_EMAIL);
    await clickText('Run (Ctrl+Enter)');
    await page.waitForFunction(() => /as user:/.test(document.querySelector('.results .muted')?.textContent || ''));
    assert.deepEqual(await column('n'), [String(ORG_A_CLIENTS)]);
    assert.deepEqual(await column('orgs'), ['1']);
    // Results are text too.
    await page.select('select[aria-label="View as"]', 'service_role');
    await page.$eval('textarea.sql', (e) => { e.value = ''; });
    await page.type('textarea.sql', `select name from clients where name like '%onerror%'`);
    await clickText('Run (Ctrl+Enter)');
    await page.waitForFunction((x) => [...document.querySelectorAll('.results td')].some((td) => td.textContent === x), {}, XSS);
    assert.equal(await page.$('img[src=x]'), null);
    await clickText('EXPLAIN ANALYZE');
    await page.waitForSelector('pre.plan');
    assert.match(await page.$eval('pre.plan', (e) => e.textContent), /actual time/);
    await clickText('Save as snippet');
    await page.waitForFunction(() => [...document.querySelectorAll('.snippets button.link')].some((b) => b.textContent === 'e2e snippet'));
    await shot('04-sql');
  });

  await t.test('invite a user', async () => {
    await gotoPage('#/auth');
    await page.waitForSelector('table.grid');
    const invite = await page.$$('form.card input[type=email]');
    await invite[1].type('invited@console.test');
    await clickText('Invite');
    await page.waitForSelector('[data-testid=invite-link] code');
    assert.match(await page.$eval('[data-testid=invite-link] code', (e) => e.textContent), /\/verify\?token=/);
    await page.waitForSelector('[data-testid=auth-in-force]');
    assert.match(await page.$eval('[data-testid=auth-in-force]', (e) => e.textContent), /GOTRUE_JWT_EXP/);
    await shot('05-auth');
  });

  await t.test('storage: create a bucket, upload, preview, delete', async () => {
    await gotoPage('#/storage');
    await page.waitForSelector('form.card input[pattern]');
    await page.type('form.card input[pattern]', 'console-e2e');
    await clickText('Create bucket');
    await page.waitForSelector('.drop input[type=file]');
    await settled();
    // A 2×2 PNG.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==', 'base64');
    const file = join(tmpdir(), `console-e2e-${process.pid}.png`);
    writeFileSync(file, png);
    const input = await page.$('.drop input[type=file]');
    await input.uploadFile(file);
    await page.waitForFunction((n) => [...document.querySelectorAll('table.grid td')].some((td) => td.textContent === n), {}, file.split('/').pop());
    await settled();
    await clickText('Preview');
    await page.waitForSelector('.preview img');
    await page.waitForFunction(() => document.querySelector('.preview img').naturalWidth === 2);
    await shot('06-storage');
    await clickText('Delete');
    await page.waitForFunction(() => /empty/.test(document.querySelector('.detail .empty')?.textContent || ''));
    // Bucket limits: size and types.
    await page.click('details.bucket-settings summary');
    await page.type('input[aria-label="File size limit in bytes"]', '1048576');
    await page.type('input[aria-label="Allowed MIME types"]', 'image/*, text/plain');
    await clickText('Save bucket settings');
    await page.waitForFunction(() => /up to 1\.0 MiB, image\/\*, text\/plain/.test(document.querySelector('details.bucket-settings summary')?.textContent || ''));
    const r = await fetch(`${BASE}/storage/v1/bucket/console-e2e`, { headers: { apikey: SERVICE, authorization: `Bearer ${SERVICE}` } });
    const b = await r.json();
    assert.equal(b.file_size_limit, 1048576);
    assert.deepEqual(b.allowed_mime_types, ['image/*', 'text/plain']);
  });

  for (const [hash, name, expect] of [
    ['#/database', '07-database', 'Schema linter'],
    ['#/ai', '08-ai', 'Configured providers'],
    ['#/logs', '09-logs', 'Recent API requests'],
    ['#/api', '10-api', 'Client setup'],
  ]) {
    await t.test(`${name.slice(3)} page renders`, async () => {
      await gotoPage(hash);
      await page.waitForFunction((x) => document.querySelector('main').innerText.includes(x), {}, expect);
      await settled();
      if (hash === '#/database') {
        // The table the driver made to break the rules (named like an XSS payload) is a
        // finding, shown as text.
        const objects = await page.$$eval('details.finding[data-rule=rls_disabled_in_public] li code', (cs) => cs.map((c) => c.textContent));
        assert.ok(objects.includes(`public."${XSS}"`), `linter findings: ${objects}`);
        assert.equal(await page.$('img[src=x]'), null);
        await page.click('details.finding[data-rule=rls_disabled_in_public] summary');
      }
      if (hash === '#/ai') {
        assert.deepEqual(await column('provider'), ['none', 'hash']);
        // The demo's seeded runs are counted per organization and function.
        const runs = (await column('runs')).map(Number);
        assert.ok(runs.length > 0 && runs.every((n) => n > 0), `AI runs: ${runs}`);
      }
      assert.equal(await page.$('main .error'), null, await page.$eval('main', (m) => m.innerText.slice(0, 500)));
      await shot(name);
    });
  }

  await t.test('realtime page: connections, channels, events per second', async () => {
    // A websocket client in another tab (no console there), broadcasting a few events.
    const other = await browser.newPage();
    // The console's tab in front again: a background tab's polling (requestAnimationFrame)
    // and screenshots stall.
    await page.bringToFront();
    await other.evaluate(async (url) => {
      const ws = new WebSocket(url);
      window.ws = ws;
      await new Promise((resolve) => { ws.onopen = resolve; });
      const send = (ref, event, payload) => ws.send(JSON.stringify({ join_ref: '1', ref: String(ref), topic: 'realtime:e2e', event, payload }));
      send(1, 'phx_join', { config: { broadcast: { self: true } } });
      // A broadcast every 200 ms while the test looks.
      let i = 2;
      window.ticker = setInterval(() => { send(i, 'broadcast', { type: 'broadcast', event: 'tick', payload: { i } }); i += 1; }, 200);
    }, `${BASE.replace('http', 'ws')}/realtime/v1/websocket?apikey=${ANON}&vsn=1.0.0`);
    await gotoPage('#/realtime');
    await page.waitForFunction(() => {
      const v = (k) => Number(document.querySelector(`[data-stat="${k}"] dd`)?.textContent);
      return v('Connections') >= 1 && v('Channels') >= 1 && v('Events in / s') > 0;
    });
    await shot('13-realtime');
    await other.evaluate(() => { clearInterval(window.ticker); window.ws.close(); });
    await other.close();
  });

  await t.test('logs & health: the server log (XSS as text) and a backup taken now', async () => {
    await gotoPage('#/logs');
    await page.select('select[aria-label="Least severe level shown"]', 'warn');
    await page.waitForFunction((x) => [...document.querySelectorAll('.grid-wrap[aria-label="server log"] td')].some((td) => td.textContent.includes(x)), {}, XSS)
      .catch((e) => { throw new Error(`the XSS log event is not in the server log grid: ${e.message}`); });
    assert.equal(await page.$('img[src=x]'), null);
    await clickText('Take a backup now');
    // The job runs in the background; the page polls it until it ends.
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=backup-jobs] td')].some((td) => td.textContent === 'done' || td.textContent === 'failed'), { timeout: 180000 });
    const jobs = await page.$eval('[data-testid=backup-jobs]', (e) => e.innerText);
    assert.match(jobs, /\bdone\b/, jobs);
    await page.waitForFunction(() => [...document.querySelectorAll('.grid-wrap[aria-label=backups] td')].some((td) => /agencyflow-console-.*\.tar\.gz/.test(td.textContent)));
    await page.$eval('main h2:nth-of-type(3)', (e) => e.scrollIntoView());
    await shot('14-logs-backup');
  });

  await t.test('the audit log shows each action', async () => {
    await gotoPage('#/audit');
    await page.waitForSelector('table.grid tbody tr');
    const actions = new Set(await column('Action'));
    for (const a of ['sign_in', 'tables.update', 'tables.view_as', 'sql.run', 'sql.explain', 'sql.snippet.save',
      'auth.user.invite', 'storage.bucket.create', 'storage.object.upload', 'storage.object.delete',
      'storage.bucket.update', 'backups.take', 'backups.done']) {
      assert.ok(actions.has(a), `${a} missing from the audit log: ${[...actions]}`);
    }
    await shot('11-audit');
  });

  await t.test('a narrow window still works', async () => {
    await page.setViewport({ width: 420, height: 800 });
    await gotoPage('#/tables/public/clients');
    await page.waitForSelector('table.grid tbody tr');
    const navWidth = await page.$eval('nav', (n) => n.getBoundingClientRect().width);
    assert.ok(navWidth <= 420);
    await shot('12-narrow');
    await page.setViewport({ width: 1280, height: 800 });
  });

  assert.deepEqual(alerts, []);
  assert.deepEqual(pageErrors, []);
});
