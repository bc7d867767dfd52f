// GraphiQL at GET /graphql/v1 in headless Chromium (Debian's `chromium`, puppeteer-core):
// the explorer loads from the server's own files (nothing from a CDN), introspects the
// agency schema with the anon key, and runs a query the user typed, under RLS.
// Run by crates/testkit/tests/it/graphql.rs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';

const BASE = process.env.SUPABASE_URL;
const ANON = process.env.SUPABASE_ANON_KEY;

let browser;
let page;
const requests = [];
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
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await browser?.close();
});

test('GraphiQL loads from the server, introspects and runs a query with the anon key', async () => {
  const resp = await page.goto(`${BASE}/graphql/v1?apikey=${ANON}`, { waitUntil: 'networkidle0' });
  assert.equal(resp.status(), 200);
  await page.waitForSelector('.graphiql-container');
  // Every request went to the server itself.
  const origin = new URL(BASE).origin;
  const foreign = requests.filter((u) => !u.startsWith(origin) && !u.startsWith('data:'));
  assert.deepEqual(foreign, []);
  // The schema was introspected: the documentation explorer knows the Query type.
  await page.waitForFunction(() => {
    const cm = document.querySelector('.graphiql-query-editor .CodeMirror');
    return cm && cm.CodeMirror;
  });
  await page.evaluate(() => {
    document
      .querySelector('.graphiql-query-editor .CodeMirror')
      .CodeMirror.setValue('{ systemsCollection(first: 2, orderBy: [{id: AscNullsLast}]) { edges { node { id } } } }');
  });
  await page.click('.graphiql-execute-button');
  await page.waitForFunction(() => {
    const r = document.querySelector('.result-window');
    return r && r.textContent.includes('systemsCollection');
  });
  const text = await page.$eval('.result-window', (e) => e.textContent);
  assert.match(text, /"edges"/);
  assert.doesNotMatch(text, /"errors"/, text);
  // anon sees the catalogue; the tenant table is not in its schema at all.
  await page.evaluate(() => {
    document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue('{ clientsCollection { edges { node { id } } } }');
  });
  await page.click('.graphiql-execute-button');
  await page.waitForFunction(() => document.querySelector('.result-window')?.textContent.includes('errors'));
  const refused = await page.$eval('.result-window', (e) => e.textContent);
  assert.match(refused, /clientsCollection/);
  assert.deepEqual(pageErrors, []);
});
