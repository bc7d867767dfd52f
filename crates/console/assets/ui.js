// Small DOM and API helpers. Everything user- or database-supplied goes into the page as
// text nodes or attribute values (never innerHTML), so a value like
// `<img src=x onerror=alert(1)>` shows as those characters.

export const session = { csrf: null, email: null };

/** Creates an element: h('button', {class: 'x', onclick: fn, 'aria-label': 'y'}, 'text', child...) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else if (k === 'selected') el.selected = !!v;
    else if (k === 'disabled') el.disabled = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.hint = body && body.hint;
    this.details = body && body.details;
    this.code = body && body.code;
  }
}

let onSignedOut = () => {};
export function setSignedOutHandler(fn) { onSignedOut = fn; }

/** Calls the console API; JSON in and out; the CSRF token on every state-changing call. */
export async function api(method, path, body, opts = {}) {
  const headers = { accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) headers['x-csrf-token'] = session.csrf;
  let payload;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    if (opts.contentType) headers['content-type'] = opts.contentType;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch('/console/api' + path, { method, headers, body: payload, credentials: 'same-origin' });
  if (opts.raw && res.ok) return res;
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { message: text }; }
  if (!res.ok) {
    const err = new ApiError(res.status, json);
    if (res.status === 401 && !opts.noSignOut) onSignedOut(err);
    throw err;
  }
  return json;
}

/** An error in words: the message, then PostgREST's/PostgreSQL's hint and details. */
export function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, e.message || String(e)),
    e.details ? h('div', {}, 'Details: ', e.details) : null,
    e.hint ? h('div', {}, 'Hint: ', e.hint) : null,
    e.code ? h('div', { class: 'muted' }, 'Code: ', e.code) : null);
}

export function notice(text, kind = 'ok') {
  const area = document.getElementById('notices');
  if (!area) return;
  const n = h('div', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
  area.append(n);
  setTimeout(() => n.remove(), 6000);
}

/** Runs an async action with a busy state on the button and errors shown in `where`. */
export async function busy(button, where, fn) {
  if (button) { button.disabled = true; button.setAttribute('aria-busy', 'true'); }
  try {
    if (where) where.replaceChildren();
    return await fn();
  } catch (e) {
    if (where) where.replaceChildren(errorBox(e)); else notice(e.message, 'error');
    return undefined;
  } finally {
    if (button) { button.disabled = false; button.removeAttribute('aria-busy'); }
  }
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, text);
}

export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

/** A value as short text for a grid cell. */
export function cellText(v, type = '') {
  if (v === null || v === undefined) return null;
  if (type.startsWith('vector') || (Array.isArray(v) && v.length > 16 && v.every((x) => typeof x === 'number'))) {
    const arr = Array.isArray(v) ? v : String(v).replace(/^\[|\]$/g, '').split(',');
    return `[${arr.slice(0, 3).map((x) => Number(x).toFixed(3)).join(', ')}, … ${arr.length} dims]`;
  }
  if (typeof v === 'object') {
    const s = JSON.stringify(v);
    return s.length > 120 ? s.slice(0, 117) + '…' : s;
  }
  const s = String(v);
  return s.length > 200 ? s.slice(0, 197) + '…' : s;
}

export function nullCell() {
  return h('span', { class: 'null' }, 'NULL');
}

/** A data grid: columns [{key, label, render?, sort?}], rows. */
export function grid(columns, rows, opts = {}) {
  const head = h('tr', {}, columns.map((c) => {
    const label = c.label ?? c.key;
    if (!c.sortable) return h('th', { scope: 'col' }, label);
    const state = opts.sort && opts.sort.column === c.key ? (opts.sort.desc ? 'descending' : 'ascending') : 'none';
    return h('th', { scope: 'col', 'aria-sort': state },
      h('button', { class: 'sort', type: 'button', onclick: () => opts.onSort(c.key), title: `Sort by ${label}` },
        label, state === 'ascending' ? ' ▲' : state === 'descending' ? ' ▼' : ''));
  }));
  const body = h('tbody', {}, rows.map((r, i) => h('tr', {}, columns.map((c) => {
    const content = c.render ? c.render(r, i) : (r[c.key] === null || r[c.key] === undefined ? nullCell() : cellText(r[c.key]));
    return h('td', {}, content);
  }))));
  return h('div', { class: 'grid-wrap', tabindex: '0', role: 'region', 'aria-label': opts.label || 'results' },
    h('table', { class: 'grid' }, h('thead', {}, head), body));
}

export function field(label, input, help) {
  const id = input.id || ('f' + Math.random().toString(36).slice(2, 9));
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, help ? h('small', { class: 'muted' }, help) : null);
}

export function fmtDate(s) {
  if (!s) return null;
  const d = new Date(s);
  return isNaN(d) ? String(s) : d.toLocaleString();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0; let x = Number(n);
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return `${i ? x.toFixed(1) : x} ${u[i]}`;
}
