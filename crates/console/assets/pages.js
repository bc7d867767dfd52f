// The console's pages. Each renders into `main` and fetches what it shows from /console/api.
import {
  h, clear, api, errorBox, busy, loading, empty, grid, field, cellText, nullCell, fmtDate, fmtBytes, notice, session,
} from './ui.js';

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------------------
// "View as": service_role, anon, or a user found by e-mail.

function viewAsPicker(state, onChange) {
  const select = h('select', { 'aria-label': 'View as' },
    h('option', { value: 'service_role' }, 'service_role (bypasses RLS)'),
    h('option', { value: 'anon' }, 'anon'),
    h('option', { value: 'user' }, 'a user…'));
  const search = h('input', { type: 'search', placeholder: 'user e-mail', 'aria-label': 'User e-mail for view as', hidden: true });
  const results = h('select', { 'aria-label': 'Matching users', hidden: true });
  const label = h('span', { class: 'muted viewas-label' });
  const set = (v, text) => { state.as = v; label.textContent = text || ''; onChange(); };
  if (state.as.startsWith('user:')) { select.value = 'user'; search.hidden = false; label.textContent = state.asLabel || state.as; }
  else select.value = state.as;
  select.addEventListener('change', () => {
    const user = select.value === 'user';
    search.hidden = !user; results.hidden = true;
    if (!user) set(select.value);
    else search.focus();
  });
  let t;
  search.addEventListener('input', () => {
    clearTimeout(t);
    t = setTimeout(async () => {
      const r = await api('GET', `/users?q=${enc(search.value)}`);
      clear(results, h('option', { value: '' }, `${r.users.length} user(s)`),
        r.users.map((u) => h('option', { value: u.id }, u.email || u.phone || u.id)));
      results.hidden = false;
    }, 250);
  });
  results.addEventListener('change', () => {
    if (!results.value) return;
    const opt = results.selectedOptions[0];
    state.asLabel = opt.textContent;
    set(`user:${results.value}`, `as ${opt.textContent}`);
  });
  return h('div', { class: 'viewas' }, h('label', {}, 'View as ', select), search, results, label);
}

// ---------------------------------------------------------------------------------------
// Tables

const tableState = { as: 'service_role', asLabel: '' };

async function tablesPage(main, args) {
  const list = h('div', { class: 'side-list' }, loading());
  const detail = h('section', { class: 'detail', 'aria-label': 'Table' });
  clear(main, h('h1', {}, 'Tables'), h('div', { class: 'split' }, list, detail));
  let tables;
  try {
    tables = (await api('GET', '/tables')).tables;
  } catch (e) { clear(list, errorBox(e)); return; }
  const filter = h('input', { type: 'search', placeholder: 'Filter tables', 'aria-label': 'Filter tables' });
  const ul = h('ul', { class: 'tables' });
  const draw = () => {
    const f = filter.value.toLowerCase();
    clear(ul, tables.filter((t) => t.name.toLowerCase().includes(f)).map((t) => h('li', {},
      h('a', { href: `#/tables/${enc(t.schema)}/${enc(t.name)}`, 'aria-current': args[1] === t.name ? 'page' : null },
        h('span', {}, t.schema === 'public' ? t.name : `${t.schema}.${t.name}`),
        h('span', { class: 'count', title: t.exact ? 'rows' : t.capped ? 'more rows than this (counting stopped)' : 'estimated rows' },
          t.count === null ? '?' : t.capped ? `${Number(t.count).toLocaleString()}+` : (t.exact ? '' : '≈') + Number(t.count).toLocaleString()),
        t.kind !== 'table' ? h('span', { class: 'tag' }, t.kind) : null,
        t.kind === 'table' && !t.rls ? h('span', { class: 'tag warn', title: 'row-level security is off' }, 'no RLS') : null))));
  };
  filter.addEventListener('input', draw);
  draw();
  clear(list, filter, tables.length ? ul : empty('No exposed tables.'));
  if (args.length >= 2) tableView(detail, args[0], args[1], args[2] ? JSON.parse(args[2]) : null);
  else clear(detail, empty('Choose a table to browse its rows.'));
}

async function tableView(root, schema, name, initialFilters) {
  clear(root, loading());
  let meta;
  try { meta = await api('GET', `/tables/${enc(schema)}/${enc(name)}`); } catch (e) { clear(root, errorBox(e)); return; }
  const cols = meta.columns;
  const colType = Object.fromEntries(cols.map((c) => [c.name, c]));
  const fkByCol = {};
  for (const fk of meta.foreign_keys) fk.columns.forEach((c) => { fkByCol[c] = fk; });
  const q = { filters: initialFilters || [], order: null, cursors: [], after: null, offset: 0 };
  const out = h('div', { 'aria-live': 'polite' });
  const gridHost = h('div', {});
  const pager = h('div', { class: 'pager' });
  const filtersBox = h('div', { class: 'filters' });
  const editor = h('div', {});
  const pk = meta.primary_key;

  const spec = () => ({ filters: q.filters, order: q.order, after: q.after, offset: q.offset || undefined, as: tableState.as, limit: 100 });

  function drawFilters() {
    clear(filtersBox, q.filters.map((f, i) => {
      const col = h('select', { 'aria-label': 'Filter column' }, cols.map((c) => h('option', { value: c.name, selected: c.name === f.column }, c.name)));
      const op = h('select', { 'aria-label': 'Filter operator' }, ['eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'like', 'ilike', 'is'].map((o) => h('option', { value: o, selected: o === f.op }, o)));
      const val = h('input', { type: 'text', value: f.value, 'aria-label': 'Filter value', placeholder: 'value' });
      col.addEventListener('change', () => { f.column = col.value; });
      op.addEventListener('change', () => { f.op = op.value; });
      val.addEventListener('input', () => { f.value = val.value; });
      val.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') reload(); });
      return h('div', { class: 'filter' }, col, op, val,
        h('button', { type: 'button', 'aria-label': 'Remove filter', onclick: () => { q.filters.splice(i, 1); drawFilters(); reload(); } }, '✕'));
    }));
  }

  function cell(row, c) {
    const v = row[c.name];
    if (v === null || v === undefined) return nullCell();
    const fk = fkByCol[c.name];
    const text = cellText(v, c.type);
    if (fk) {
      const filters = fk.columns.map((fc, i) => ({ column: fk.ref_columns[i], op: 'eq', value: String(row[fc] ?? '') }));
      return h('a', { href: `#/tables/${enc(fk.ref_schema)}/${enc(fk.ref_table)}/${enc(JSON.stringify(filters))}`, title: `${fk.ref_table} row` }, text);
    }
    return text;
  }

  async function reload() {
    await busy(null, out, async () => {
      clear(gridHost, loading());
      const r = await api('GET', `/tables/${enc(schema)}/${enc(name)}/rows?q=${enc(JSON.stringify(spec()))}`);
      const columns = [
        { key: '__edit', label: '', render: (row) => meta.kind === 'table' && meta.primary_key.length && tableState.as === 'service_role'
          ? h('button', { type: 'button', class: 'small', 'aria-label': 'Edit row', onclick: () => rowEditor(row) }, 'Edit') : null },
        ...cols.map((c) => ({ key: c.name, label: c.name, sortable: !['json', 'jsonb'].includes(c.type) && !c.type.startsWith('vector'), render: (row) => cell(row, c) })),
      ];
      clear(gridHost, r.rows.length ? grid(columns, r.rows, {
        label: `${name} rows`,
        sort: q.order,
        onSort: (col) => {
          q.order = q.order && q.order.column === col ? { column: col, desc: !q.order.desc } : { column: col, desc: false };
          q.cursors = []; q.after = null; q.offset = 0; reload();
        },
      }) : empty(tableState.as === 'service_role' ? 'No rows match.' : `No rows visible as ${tableState.as} (row-level security decides).`));
      const last = r.rows[r.rows.length - 1];
      const page = q.cursors.length + 1;
      const next = h('button', { type: 'button', disabled: !r.more, onclick: () => {
        q.cursors.push({ after: q.after, offset: q.offset });
        // Keyset: [sort value, key values...] of the last row (any number of key columns).
        if (pk.length) q.after = [q.order ? (last[q.order.column] ?? null) : null, ...pk.map((k) => last[k])];
        else q.offset = (q.offset || 0) + r.rows.length;
        reload();
      } }, 'Next page →');
      const prev = h('button', { type: 'button', disabled: page === 1, onclick: () => { const c = q.cursors.pop(); q.after = c.after; q.offset = c.offset; reload(); } }, '← Previous');
      clear(pager, prev, h('span', { class: 'muted' }, `page ${page} · ${r.rows.length} rows · ${r.elapsed_ms.toFixed(1)} ms · as ${r.as}`), next);
    });
  }

  function inputFor(c, v) {
    const val = v === null || v === undefined ? '' : (typeof v === 'object' ? JSON.stringify(v, null, 2) : String(v));
    let input;
    if (c.enum_values) {
      input = h('select', {}, c.nullable ? h('option', { value: '' }, 'NULL') : null, c.enum_values.map((e) => h('option', { value: e, selected: e === v }, e)));
    } else if (c.type === 'boolean') {
      input = h('select', {}, h('option', { value: '' }, 'NULL'), h('option', { value: 'true', selected: v === true }, 'true'), h('option', { value: 'false', selected: v === false }, 'false'));
    } else if (c.type === 'json' || c.type === 'jsonb') {
      input = h('textarea', { rows: '4', class: 'mono', spellcheck: 'false' }); input.value = val;
    } else if (c.type.startsWith('vector')) {
      input = h('input', { type: 'text', value: cellText(v, c.type) ?? '', readonly: true, 'data-readonly': 'true' });
    } else if (c.category === 'N') {
      input = h('input', { type: 'number', step: 'any', value: val });
    } else if (c.type === 'text' && val.length > 60) {
      input = h('textarea', { rows: '3' }); input.value = val;
    } else {
      input = h('input', { type: 'text', value: val, placeholder: c.type.startsWith('timestamp') ? '2026-01-31T09:00:00Z' : (c.has_default ? 'default' : '') });
    }
    input.dataset.column = c.name;
    return input;
  }

  function parseInput(c, input) {
    const raw = input.value;
    if (raw === '' && (c.nullable || c.has_default)) return null;
    if (c.type === 'json' || c.type === 'jsonb') {
      try { return JSON.parse(raw); } catch (e) { throw new Error(`${c.name}: not valid JSON (${e.message})`); }
    }
    if (c.type === 'boolean') return raw === 'true';
    if (c.category === 'N' && raw !== '') return Number(raw);
    return raw;
  }

  function rowEditor(row) {
    const isNew = !row;
    const inputs = cols.filter((c) => !c.generated).map((c) => [c, inputFor(c, row ? row[c.name] : null)]);
    const msg = h('div', { 'aria-live': 'polite' });
    const save = h('button', { type: 'submit', class: 'primary' }, isNew ? 'Insert row' : 'Save changes');
    const key = {};
    if (row) meta.primary_key.forEach((k) => { key[k] = row[k]; });
    const del = isNew ? null : h('button', { type: 'button', class: 'danger', onclick: () => {
      if (!confirm('Delete this row?')) return;
      busy(del, msg, async () => {
        await api('DELETE', `/tables/${enc(schema)}/${enc(name)}/rows`, { key });
        notice('Row deleted'); clear(editor); reload();
      });
    } }, 'Delete row');
    const form = h('form', { class: 'card editor', onsubmit: (ev) => {
      ev.preventDefault();
      busy(save, msg, async () => {
        const values = {};
        for (const [c, input] of inputs) {
          if (input.dataset.readonly) continue;
          const v = parseInput(c, input);
          if (isNew) { if (!(v === null && c.has_default)) values[c.name] = v; }
          else if (JSON.stringify(v) !== JSON.stringify(row[c.name] ?? null)) values[c.name] = v;
        }
        if (!isNew && !Object.keys(values).length) { notice('Nothing changed'); return; }
        await api(isNew ? 'POST' : 'PATCH', `/tables/${enc(schema)}/${enc(name)}/rows`, isNew ? { values } : { key, values });
        notice(isNew ? 'Row inserted' : 'Row saved'); clear(editor); reload();
      });
    } },
    h('h2', {}, isNew ? `New row in ${name}` : `Edit ${name} row`),
    h('div', { class: 'form-grid' }, inputs.map(([c, input]) => field(`${c.name} (${c.type}${c.nullable ? '' : ', required'})`, input))),
    h('div', { class: 'actions' }, save, h('button', { type: 'button', onclick: () => clear(editor) }, 'Cancel'), del), msg);
    clear(editor, form);
    form.querySelector('input, select, textarea')?.focus();
  }

  const addFilter = h('button', { type: 'button', onclick: () => { q.filters.push({ column: cols[0].name, op: 'eq', value: '' }); drawFilters(); } }, '+ Filter');
  const apply = h('button', { type: 'button', class: 'primary', onclick: () => { q.cursors = []; q.after = null; q.offset = 0; reload(); } }, 'Apply');
  const insert = meta.kind === 'table' ? h('button', { type: 'button', onclick: () => rowEditor(null) }, '+ Insert row') : null;
  const csv = h('a', { class: 'button', href: '#', onclick: (ev) => {
    ev.currentTarget.href = `/console/api/tables/${enc(schema)}/${enc(name)}/csv?q=${enc(JSON.stringify({ filters: q.filters, as: tableState.as }))}`;
  }, download: `${name}.csv` }, 'Export CSV');
  drawFilters();
  clear(root,
    h('h2', {}, `${schema}.${name}`, h('span', { class: 'muted' }, ` ${meta.kind}`)),
    h('div', { class: 'toolbar' }, viewAsPicker(tableState, () => { q.cursors = []; q.after = null; q.offset = 0; reload(); }), addFilter, apply, insert, csv),
    filtersBox, out, editor, gridHost, pager);
  reload();
}

// ---------------------------------------------------------------------------------------
// SQL

const sqlState = { as: 'service_role', asLabel: '', text: 'select id, name from clients order by name limit 20;' };

async function sqlPage(main) {
  const editor = h('textarea', { class: 'sql mono', rows: '10', spellcheck: 'false', 'aria-label': 'SQL' });
  editor.value = sqlState.text;
  editor.addEventListener('input', () => { sqlState.text = editor.value; });
  const rollback = h('input', { type: 'checkbox' });
  const out = h('div', { class: 'results', 'aria-live': 'polite' });
  const snippets = h('div', { class: 'snippets' });
  const run = (explain) => (ev) => busy(ev.currentTarget, out, async () => {
    clear(out, loading('Running…'));
    const r = await api('POST', '/sql', { sql: editor.value, as: sqlState.as, explain, rollback: rollback.checked });
    clear(out, h('p', { class: 'muted' }, `${r.results.length} statement(s) as ${r.as} (role ${r.role}) · ${r.elapsed_ms.toFixed(1)} ms · ${r.committed ? 'committed' : 'rolled back'}`),
      r.results.map((s) => s.columns.length
        ? (explain ? h('pre', { class: 'plan' }, s.rows.map((row) => row[0]).join('\n'))
          : [grid(s.columns.map((c, i) => ({ key: i, label: c, render: (row) => (row[i] === null ? nullCell() : cellText(row[i])) })), s.rows, { label: 'SQL result' }),
            h('p', { class: 'muted' }, `${s.row_count} row(s)${s.truncated ? ' (first 1000 shown)' : ''}`)])
        : h('p', {}, `OK, ${s.row_count} row(s) affected`)));
  });
  editor.addEventListener('keydown', (ev) => { if ((ev.ctrlKey || ev.metaKey) && ev.key === 'Enter') runBtn.click(); });
  const runBtn = h('button', { type: 'button', class: 'primary', onclick: run(false) }, 'Run (Ctrl+Enter)');
  async function loadSnippets() {
    const r = await api('GET', '/snippets');
    clear(snippets, h('h2', {}, 'Saved snippets'), r.snippets.length ? h('ul', {}, r.snippets.map((s) => h('li', {},
      h('button', { type: 'button', class: 'link', onclick: () => { editor.value = s.sql; sqlState.text = s.sql; editor.focus(); } }, s.name),
      h('button', { type: 'button', class: 'small', 'aria-label': `Delete snippet ${s.name}`, onclick: (ev) => busy(ev.currentTarget, null, async () => { await api('DELETE', `/snippets/${s.id}`); loadSnippets(); }) }, '✕')))) : empty('None yet.'));
  }
  const save = h('button', { type: 'button', onclick: () => {
    const name = prompt('Snippet name');
    if (name) busy(save, out, async () => { await api('POST', '/snippets', { name, sql: editor.value }); notice('Snippet saved'); loadSnippets(); });
  } }, 'Save as snippet');
  clear(main, h('h1', {}, 'SQL'),
    h('div', { class: 'split' },
      h('section', {},
        editor,
        h('div', { class: 'toolbar' }, viewAsPicker(sqlState, () => {}), h('label', {}, rollback, ' Roll back'), runBtn,
          h('button', { type: 'button', onclick: run(true) }, 'EXPLAIN ANALYZE'), save),
        h('p', { class: 'muted' }, 'Runs in one transaction with a statement timeout, on a connection of its own. As a user, row-level security applies as for them.'),
        out),
      snippets));
  loadSnippets().catch((e) => clear(snippets, errorBox(e)));
}

// ---------------------------------------------------------------------------------------
// Auth

async function authPage(main) {
  const search = h('input', { type: 'search', placeholder: 'Search e-mail, phone or id', 'aria-label': 'Search users' });
  const list = h('div', {}, loading());
  const out = h('div', { 'aria-live': 'polite' });
  // Links handed out (invite, reset) stay until the next one, whatever reloads.
  const links = h('div', { 'aria-live': 'polite' });
  const detail = h('div', {});
  let page = 1;
  async function load() {
    await busy(null, out, async () => {
      const r = await api('GET', `/users?q=${enc(search.value)}&page=${page}`);
      const act = (u, action, label, cls) => h('button', { type: 'button', class: `small ${cls || ''}`, onclick: (ev) => {
        if (action === 'delete' && !confirm(`Delete ${u.email || u.id}?`)) return;
        busy(ev.currentTarget, out, async () => {
          const res = action === 'delete' ? await api('DELETE', `/users/${u.id}`) : await api('POST', `/users/${u.id}/${action}`, {});
          if (res && res.action_link) clear(links, h('div', { class: 'card' }, h('p', {}, `Password reset link for ${u.email} (single use):`), h('code', { class: 'wrap' }, res.action_link)));
          else notice(`${label}: done`);
          load();
        });
      } }, label);
      clear(list, r.users.length ? grid([
        { key: 'email', label: 'E-mail', render: (u) => h('button', { type: 'button', class: 'link', onclick: () => showUser(u.id) }, u.email || u.phone || u.id) },
        { key: 'created_at', label: 'Created', render: (u) => fmtDate(u.created_at) },
        { key: 'last_sign_in_at', label: 'Last sign-in', render: (u) => fmtDate(u.last_sign_in_at) ?? nullCell() },
        { key: 'email_confirmed_at', label: 'Confirmed', render: (u) => (u.email_confirmed_at ? 'yes' : 'no') },
        { key: 'banned_until', label: 'Banned', render: (u) => (u.banned_until && new Date(u.banned_until) > new Date() ? 'banned' : '') },
        { key: 'sessions', label: 'Sessions' },
        { key: 'actions', label: 'Actions', render: (u) => h('div', { class: 'actions' },
          u.email_confirmed_at ? null : act(u, 'confirm', 'Confirm'),
          u.banned_until && new Date(u.banned_until) > new Date() ? act(u, 'unban', 'Unban') : act(u, 'ban', 'Ban'),
          act(u, 'sign-out', 'Sign out everywhere'), act(u, 'recovery-link', 'Reset link'), act(u, 'delete', 'Delete', 'danger')) },
      ], r.users, { label: 'users' }) : empty('No users match.'),
      h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: page === 1, onclick: () => { page--; load(); } }, '← Previous'),
        h('span', { class: 'muted' }, `page ${page} · ${r.total} user(s)`),
        h('button', { type: 'button', disabled: page * 50 >= r.total, onclick: () => { page++; load(); } }, 'Next →')));
    });
  }
  async function showUser(id) {
    await busy(null, detail, async () => {
      const r = await api('GET', `/users/${id}`);
      const u = r.user;
      clear(detail, h('div', { class: 'card' }, h('h2', {}, u.email || u.id),
        h('dl', {}, [['id', u.id], ['role', u.role], ['provider', u.app_metadata && u.app_metadata.provider], ['created', fmtDate(u.created_at)],
          ['identities', (u.identities || []).map((i) => i.provider).join(', ')], ['factors', (u.factors || []).map((f) => `${f.factor_type} (${f.status})`).join(', ')]]
          .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v || '—')])),
        h('h3', {}, 'Sessions'),
        r.sessions.length ? grid([{ key: 'created_at', label: 'Started', render: (s) => fmtDate(s.created_at) }, { key: 'aal', label: 'AAL' }, { key: 'ip', label: 'IP' }, { key: 'user_agent', label: 'User agent' }], r.sessions, { label: 'sessions' }) : empty('No sessions.')));
    });
  }
  search.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { page = 1; load(); } });
  const email = h('input', { type: 'email', required: true });
  const password = h('input', { type: 'password', autocomplete: 'new-password' });
  const confirmBox = h('input', { type: 'checkbox', checked: true });
  const create = h('button', { type: 'submit' }, 'Create user');
  const inviteEmail = h('input', { type: 'email', required: true });
  const invite = h('button', { type: 'submit' }, 'Invite');
  const settings = h('div', {});
  clear(main, h('h1', {}, 'Auth'),
    h('div', { class: 'toolbar' }, search, h('button', { type: 'button', onclick: () => { page = 1; load(); } }, 'Search')),
    out, links, list, detail,
    h('div', { class: 'cards' },
      h('form', { class: 'card', onsubmit: (ev) => { ev.preventDefault(); busy(create, out, async () => {
        await api('POST', '/users', { email: email.value, password: password.value || null, confirm: confirmBox.checked });
        notice(`User ${email.value} created`); email.value = ''; password.value = ''; load();
      }); } }, h('h2', {}, 'Create a user'), field('E-mail', email), field('Password (optional)', password), h('label', {}, confirmBox, ' Mark the address confirmed'), create),
      h('form', { class: 'card', onsubmit: (ev) => { ev.preventDefault(); busy(invite, out, async () => {
        const r = await api('POST', '/users/invite', { email: inviteEmail.value });
        clear(links, h('div', { class: 'card', 'data-testid': 'invite-link' }, h('p', {}, `Invitation for ${r.email} (single-use link):`), h('code', { class: 'wrap' }, r.action_link || '(mailed)')));
        inviteEmail.value = ''; load();
      }); } }, h('h2', {}, 'Invite a user'), field('E-mail', inviteEmail), invite),
      h('section', { class: 'card' }, h('h2', {}, 'Settings in force'), settings)));
  load();
  api('GET', '/auth-settings').then((r) => clear(settings,
    h('h3', {}, 'Server settings (secrets hidden)'), h('pre', { class: 'mono', 'data-testid': 'auth-in-force' }, JSON.stringify(r.in_force, null, 2)),
    h('h3', {}, 'Public settings (/auth/v1/settings)'), h('pre', { class: 'mono' }, JSON.stringify(r.settings, null, 2)))).catch((e) => clear(settings, errorBox(e)));
}

// ---------------------------------------------------------------------------------------
// Storage

const storageState = { bucket: null, prefix: '' };

async function storagePage(main) {
  const buckets = h('div', { class: 'side-list' }, loading());
  const browser = h('section', { class: 'detail', 'aria-label': 'Files' });
  clear(main, h('h1', {}, 'Storage'), h('div', { class: 'split' }, buckets, browser));
  async function loadBuckets() {
    const list = await api('GET', '/storage/buckets');
    storageState.buckets = list;
    const name = h('input', { type: 'text', required: true, pattern: '[a-z0-9._-]+' });
    const pub = h('input', { type: 'checkbox' });
    const limit = h('input', { type: 'number', min: '0', placeholder: 'bytes' });
    const add = h('button', { type: 'submit' }, 'Create bucket');
    const msg = h('div', {});
    clear(buckets, h('ul', { class: 'tables' }, list.map((b) => h('li', {}, h('a', { href: '#/storage', 'aria-current': storageState.bucket === b.id ? 'page' : null, onclick: (ev) => { ev.preventDefault(); storageState.bucket = b.id; storageState.prefix = ''; loadBuckets(); browse(); } },
      h('span', {}, b.name), h('span', { class: 'tag' }, b.public ? 'public' : 'private'), b.file_size_limit ? h('span', { class: 'count' }, fmtBytes(b.file_size_limit)) : null)))),
    list.length ? null : empty('No buckets yet.'),
    h('form', { class: 'card', onsubmit: (ev) => { ev.preventDefault(); busy(add, msg, async () => {
      await api('POST', '/storage/buckets', { name: name.value, public: pub.checked, file_size_limit: limit.value ? Number(limit.value) : null });
      notice(`Bucket ${name.value} created`); storageState.bucket = name.value; await loadBuckets(); browse();
    }); } }, h('h2', {}, 'New bucket'), field('Name', name), h('label', {}, pub, ' Public'), field('File size limit', limit), add, msg));
  }
  async function browse() {
    const b = storageState.bucket;
    if (!b) { clear(browser, empty('Choose a bucket.')); return; }
    clear(browser, loading());
    const out = h('div', { 'aria-live': 'polite' });
    const preview = h('div', { class: 'preview' });
    let items;
    try { items = await api('GET', `/storage/list?bucket=${enc(b)}&prefix=${enc(storageState.prefix)}`); } catch (e) { clear(browser, errorBox(e)); return; }
    const crumbs = ['', ...storageState.prefix.split('/').filter(Boolean)];
    const path = (n) => (storageState.prefix ? `${storageState.prefix}/${n}` : n);
    const file = h('input', { type: 'file', multiple: true, 'aria-label': 'Files to upload' });
    const progress = h('progress', { max: '100', value: '0', hidden: true, 'aria-label': 'Upload progress' });
    const drop = h('div', { class: 'drop', tabindex: '0' }, 'Drop files here, or ', file);
    async function upload(files) {
      for (const f of files) {
        progress.hidden = false;
        await new Promise((resolve) => {
          const x = new XMLHttpRequest();
          x.open('POST', `/console/api/storage/object?bucket=${enc(b)}&path=${enc(path(f.name))}`);
          x.setRequestHeader('x-csrf-token', session.csrf || '');
          x.setRequestHeader('content-type', f.type || 'application/octet-stream');
          x.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
          x.onload = () => {
            if (x.status >= 400) { let m = x.statusText; try { m = JSON.parse(x.responseText).message; } catch { /* text */ } clear(out, errorBox({ message: m })); } else notice(`${f.name} uploaded`);
            resolve();
          };
          x.onerror = () => { clear(out, errorBox({ message: 'upload failed (network)' })); resolve(); };
          x.send(f);
        });
      }
      progress.hidden = true;
      browse();
    }
    file.addEventListener('change', () => upload([...file.files]));
    drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (ev) => { ev.preventDefault(); drop.classList.remove('over'); upload([...ev.dataTransfer.files]); });
    const bucket = (storageState.buckets || []).find((x) => x.id === b) || { id: b, public: false };
    const bPublic = h('input', { type: 'checkbox', checked: !!bucket.public });
    const bLimit = h('input', { type: 'number', min: '0', value: bucket.file_size_limit ?? '', placeholder: 'no limit', 'aria-label': 'File size limit in bytes' });
    const bTypes = h('input', { type: 'text', value: (bucket.allowed_mime_types || []).join(', '), placeholder: 'any type, e.g. image/*, application/pdf', 'aria-label': 'Allowed MIME types' });
    const bSave = h('button', { type: 'submit' }, 'Save bucket settings');
    const bMsg = h('div', { 'aria-live': 'polite' });
    const limits = h('details', { class: 'card bucket-settings' }, h('summary', {}, `Bucket settings: ${bucket.public ? 'public' : 'private'}, ${bucket.file_size_limit ? `up to ${fmtBytes(bucket.file_size_limit)}` : 'no size limit'}, ${(bucket.allowed_mime_types || []).length ? bucket.allowed_mime_types.join(', ') : 'any type'}`),
      h('form', { onsubmit: (ev) => { ev.preventDefault(); busy(bSave, bMsg, async () => {
        const types = bTypes.value.split(',').map((t) => t.trim()).filter(Boolean);
        await api('PUT', `/storage/buckets/${enc(b)}`, { public: bPublic.checked, file_size_limit: bLimit.value === '' ? null : Number(bLimit.value), allowed_mime_types: types.length ? types : null });
        notice(`Bucket ${b} saved`); await loadBuckets(); browse();
      }); } }, h('label', {}, bPublic, ' Public'), field('File size limit (bytes)', bLimit), field('Allowed MIME types (comma-separated)', bTypes), bSave, bMsg));
    const objUrl = (name, download) => `/console/api/storage/object?bucket=${enc(b)}&path=${enc(path(name))}${download ? '&download=true' : ''}`;
    async function show(o) {
      const type = (o.metadata && o.metadata.mimetype) || '';
      await busy(null, preview, async () => {
        const res = await api('GET', objUrl(o.name).replace('/console/api', ''), undefined, { raw: true });
        const blob = await res.blob();
        if (type.startsWith('image/')) {
          const img = h('img', { alt: `Preview of ${o.name}`, src: URL.createObjectURL(blob) });
          clear(preview, h('h3', {}, o.name), img);
        } else if (type.startsWith('text/') || type === 'application/json' || /\.(txt|md|csv|json|log)$/i.test(o.name)) {
          const text = await blob.slice(0, 20000).text();
          clear(preview, h('h3', {}, o.name), h('pre', { class: 'mono' }, text));
        } else clear(preview, h('h3', {}, o.name), empty(`No preview for ${type || 'this type'}; download it instead.`));
      });
    }
    const rows = items.map((o) => ({ ...o, folder: o.id === null }));
    clear(browser,
      h('nav', { class: 'crumbs', 'aria-label': 'Folder' }, crumbs.map((c, i) => h('button', { type: 'button', class: 'link', onclick: () => { storageState.prefix = crumbs.slice(1, i + 1).join('/'); browse(); } }, i === 0 ? b : c))),
      limits, drop, progress, out,
      rows.length ? grid([
        { key: 'name', label: 'Name', render: (o) => (o.folder ? h('button', { type: 'button', class: 'link', onclick: () => { storageState.prefix = path(o.name); browse(); } }, `📁 ${o.name}/`) : o.name) },
        { key: 'size', label: 'Size', render: (o) => (o.folder ? '' : fmtBytes(o.metadata && o.metadata.size)) },
        { key: 'type', label: 'Type', render: (o) => (o.folder ? 'folder' : (o.metadata && o.metadata.mimetype) || '') },
        { key: 'updated_at', label: 'Updated', render: (o) => fmtDate(o.updated_at) },
        { key: 'actions', label: 'Actions', render: (o) => (o.folder ? null : h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'small', onclick: () => show(o) }, 'Preview'),
          h('a', { class: 'button small', href: objUrl(o.name, true), download: o.name }, 'Download'),
          h('button', { type: 'button', class: 'small', onclick: (ev) => busy(ev.currentTarget, out, async () => {
            const r = await api('POST', '/storage/sign', { bucket: b, path: path(o.name), expires_in: 3600 });
            clear(out, h('div', { class: 'card' }, h('p', {}, 'Signed link (1 hour):'), h('code', { class: 'wrap' }, r.url)));
          }) }, 'Signed link'),
          h('button', { type: 'button', class: 'small danger', onclick: (ev) => {
            if (!confirm(`Delete ${o.name}?`)) return;
            busy(ev.currentTarget, out, async () => { await api('DELETE', '/storage/object', { bucket: b, paths: [path(o.name)] }); notice(`${o.name} deleted`); clear(preview); browse(); });
          } }, 'Delete'))) },
      ], rows, { label: 'files' }) : empty('This folder is empty: drop files above.'),
      preview);
  }
  try { await loadBuckets(); } catch (e) { clear(buckets, errorBox(e)); }
  browse();
}

// ---------------------------------------------------------------------------------------
// Database, AI, Logs & health, API, Audit log

function simpleTable(rows, label) {
  if (!Array.isArray(rows)) return rows && rows.error ? errorBox({ message: rows.error }) : empty('Nothing to show.');
  if (!rows.length) return empty('Nothing yet.');
  const keys = Object.keys(rows[0]);
  return grid(keys.map((k) => ({ key: k, label: k })), rows, { label });
}

function lintSection(l) {
  const byRule = {};
  for (const f of l.findings) (byRule[f.rule] ||= []).push(f);
  const failing = l.rules.filter((r) => r.findings > 0 || r.error);
  const passing = l.rules.filter((r) => !r.findings && !r.error);
  const order = { ERROR: 0, WARN: 1, INFO: 2 };
  failing.sort((a, b) => order[a.level] - order[b.level]);
  return h('section', { class: 'lint', 'aria-label': 'Schema linter' },
    h('h2', {}, 'Schema linter'),
    h('p', { class: 'muted' }, `Supabase's splinter rules over the exposed schemas (${l.schemas.join(', ')}): ${l.findings.length} finding(s), ${passing.length} of ${l.rules.length} rules pass.`),
    failing.length ? null : empty('No findings.'),
    failing.map((r) => h('details', { class: 'card finding', 'data-rule': r.rule },
      h('summary', {}, h('span', { class: `tag level-${r.level.toLowerCase()}` }, r.level), ` ${r.title} · ${r.category.toLowerCase()} · ${r.findings} object(s)`),
      h('p', {}, h('strong', {}, 'What it means: '), r.means),
      h('p', {}, h('strong', {}, 'How to fix: '), h('code', {}, r.fix)),
      r.error ? errorBox({ message: r.error }) : null,
      h('ul', { class: 'objects' }, (byRule[r.rule] || []).map((f) => h('li', {}, h('code', {}, f.object), f.detail ? ` — ${f.detail}` : ''))),
      h('p', { class: 'muted' }, `splinter ${r.code}_${r.rule}`))),
    passing.length ? h('p', { class: 'muted' }, 'Passing: ', passing.map((r) => r.title).join(' · ')) : null);
}

async function databasePage(main) {
  clear(main, h('h1', {}, 'Database'), loading());
  try {
    const [d, l] = await Promise.all([api('GET', '/database'), api('GET', '/lint')]);
    const applied = new Set((d.migrations || []).map((m) => m.version));
    const migrations = d.embedded_migrations.map((f) => ({ file: f, state: applied.has(f.split('_')[0]) ? 'applied' : 'pending' }));
    const byTable = {};
    for (const p of d.policies) (byTable[`${p.schema}.${p.table}`] ||= []).push(p);
    clear(main, h('h1', {}, 'Database'),
      lintSection(l),
      h('h2', {}, 'Row-level security per table'),
      d.rls.map((t) => h('details', { class: 'card' },
        h('summary', {}, `${t.schema}.${t.table} — RLS ${t.enabled ? 'on' : 'OFF'}${t.forced ? ', forced' : ''} · ${(byTable[`${t.schema}.${t.table}`] || []).length} policies`),
        (byTable[`${t.schema}.${t.table}`] || []).map((p) => h('div', { class: 'policy' },
          h('strong', {}, p.name), ` — ${p.permissive === 'PERMISSIVE' ? 'allows' : 'restricts'} ${p.command} for ${p.roles.join(', ')}`,
          p.using ? h('div', {}, 'rows it sees: ', h('code', {}, p.using)) : null,
          p.with_check ? h('div', {}, 'rows it may write: ', h('code', {}, p.with_check)) : null)))),
      h('h2', {}, 'Migrations'), simpleTable(migrations, 'migrations'),
      h('h2', {}, 'Extensions'), simpleTable(d.extensions, 'extensions'),
      h('h2', {}, 'Roles'), simpleTable(d.roles, 'roles'));
  } catch (e) { clear(main, h('h1', {}, 'Database'), errorBox(e)); }
}

async function aiPage(main) {
  clear(main, h('h1', {}, 'AI'), loading());
  try {
    const d = await api('GET', '/ai');
    clear(main, h('h1', {}, 'AI'),
      h('h2', {}, 'Configured providers'),
      simpleTable((d.providers || []).map((p) => ({ use: p.use, provider: p.provider, model: p.model, endpoint: p.endpoint, key: p.key ? 'set (hidden)' : 'none', note: p.note || '' })), 'AI providers'),
      h('h2', {}, 'Runs by organization and function'), simpleTable(d.by_function, 'AI runs'),
      h('h2', {}, 'Usage today against the limits'), simpleTable(d.usage_today, 'AI usage'),
      h('pre', { class: 'mono' }, JSON.stringify(d.limits, null, 2)),
      h('h2', {}, 'Embedding queue'), simpleTable(d.embedding_queue, 'embedding queue'),
      h('h2', {}, 'Embedding models of stored vectors'), simpleTable(d.embedding_models, 'embedding models'));
  } catch (e) { clear(main, h('h1', {}, 'AI'), errorBox(e)); }
}

async function logsPage(main) {
  const filter = h('input', { type: 'search', placeholder: 'Filter by path, status, role, request id', 'aria-label': 'Filter requests' });
  const health = h('div', {}, loading());
  const supervisor = h('div', {});
  const backups = h('div', {}, loading());
  const tail = h('div', {}, loading());
  const reqs = h('div', {}, loading());
  const level = h('select', { 'aria-label': 'Least severe level shown' },
    ['error', 'warn', 'info', 'debug'].map((l) => h('option', { value: l, selected: l === 'info' }, l)));
  let all = [];
  const draw = () => {
    const f = filter.value.toLowerCase();
    const rows = all.filter((r) => !f || [r.path, r.status, r.role, r.request_id, r.method].join(' ').toLowerCase().includes(f));
    clear(reqs, simpleTable(rows.slice(0, 500).map((r) => ({ at: fmtDate(r.at), method: r.method, path: r.path, status: r.status, 'latency ms': r.latency_ms.toFixed(1), role: r.role, request_id: r.request_id })), 'recent requests'));
  };
  filter.addEventListener('input', draw);
  async function loadTail() {
    await busy(null, tail, async () => {
      const r = await api('GET', `/logs?level=${enc(level.value)}&limit=300`);
      clear(tail, r.events.length ? grid([
        { key: 'at', label: 'When', render: (e) => fmtDate(e.at) },
        { key: 'level', label: 'Level', render: (e) => h('span', { class: `tag level-${e.level.toLowerCase()}` }, e.level) },
        { key: 'target', label: 'Source' },
        { key: 'message', label: 'Message' },
        { key: 'fields', label: 'Fields', render: (e) => cellText(Object.keys(e.fields).length ? e.fields : '') },
      ], r.events, { label: 'server log' }) : empty(`No ${level.value} events or worse since the server started.`));
    });
  }
  level.addEventListener('change', loadTail);
  function drawSupervisor(s) {
    if (!s) { clear(supervisor, h('p', { class: 'muted' }, 'DATABASE_URL: the database is not the embedded one, so there is no supervisor.')); return; }
    clear(supervisor, h('p', {}, `Embedded PostgreSQL: ${s.state}${s.detail ? ` (${s.detail})` : ''} · ${s.restarts} restart(s) · ${s.failed_starts} failed start(s)`),
      s.history.length ? grid([
        { key: 'died_at', label: 'Died', render: (e) => fmtDate(e.died_at) },
        { key: 'cause', label: 'Cause' },
        { key: 'back_at', label: 'Back', render: (e) => fmtDate(e.back_at) ?? 'not yet' },
        { key: 'down_ms', label: 'Down (ms)' },
        { key: 'failed_attempts', label: 'Failed attempts' },
      ], s.history, { label: 'restarts' }) : empty('No restarts since the server started.'));
  }
  const take = h('button', { type: 'button', class: 'primary' }, 'Take a backup now');
  let polling = null;
  async function loadBackups() {
    const r = await api('GET', '/backups');
    if (!r.available) { clear(backups, empty(r.reason)); return; }
    const running = r.jobs.some((j) => j.state === 'running');
    take.disabled = running;
    clear(backups, h('p', { class: 'muted' }, `Folder: ${r.dir}`), h('div', { class: 'toolbar' }, take),
      r.jobs.length ? h('div', { 'data-testid': 'backup-jobs' }, grid([
        { key: 'started_at', label: 'Started', render: (j) => fmtDate(j.started_at) },
        { key: 'by', label: 'By' },
        { key: 'file', label: 'File' },
        { key: 'state', label: 'State', render: (j) => (j.state === 'running' ? h('span', { class: 'loading-inline', role: 'status' }, 'running…') : j.state) },
        { key: 'result', label: 'Result', render: (j) => (j.error ? j.error : j.result ? `${fmtBytes(j.result.bytes)}, ${j.result.objects} storage object(s)` : '') },
      ], r.jobs, { label: 'backup jobs' })) : null,
      h('h3', {}, 'Archives'),
      r.archives.length ? grid([
        { key: 'name', label: 'File' },
        { key: 'bytes', label: 'Size', render: (a) => fmtBytes(a.bytes) },
        { key: 'modified', label: 'Written', render: (a) => fmtDate(a.modified) },
      ], r.archives, { label: 'backups' }) : empty('No backups in this folder yet.'));
    clearTimeout(polling);
    if (running && main.dataset.page === 'logs') polling = setTimeout(() => loadBackups().catch((e) => clear(backups, errorBox(e))), 1000);
  }
  take.addEventListener('click', () => busy(take, backups, async () => {
    await api('POST', '/backups', {});
    notice('Backup started');
    await loadBackups();
  }));
  const refresh = h('button', { type: 'button', onclick: () => load() }, 'Refresh');
  async function load() {
    await busy(refresh, health, async () => {
      const [hl, r] = await Promise.all([api('GET', '/health'), api('GET', '/requests')]);
      clear(health, h('p', {}, `/health answered ${hl.status}`), h('pre', { class: 'mono' }, JSON.stringify({ health: hl.health, server: hl.server }, null, 2)));
      drawSupervisor(hl.supervisor);
      all = r.requests; draw();
    });
    loadTail();
    loadBackups().catch((e) => clear(backups, errorBox(e)));
  }
  clear(main, h('h1', {}, 'Logs & health'), h('div', { class: 'toolbar' }, refresh),
    h('h2', {}, 'Health'), health,
    h('h2', {}, 'Database supervisor'), supervisor,
    h('h2', {}, 'Backups'), backups,
    h('h2', {}, 'Server log'), h('div', { class: 'toolbar' }, h('label', {}, 'Level ', level)), tail,
    h('h2', {}, 'Recent API requests'), h('div', { class: 'toolbar' }, filter), reqs);
  load();
}

let realtimeRun = 0;

async function realtimePage(main) {
  const run = ++realtimeRun;
  const body = h('div', {}, loading());
  clear(main, h('h1', {}, 'Realtime'), h('p', { class: 'muted' }, 'Websockets of /realtime/v1: refreshed every 2 seconds while this page is open.'), body);
  let first = true;
  async function load() {
    if (run !== realtimeRun || main.dataset.page !== 'realtime' || !main.isConnected) return;
    try {
      const r = await api('GET', '/realtime');
      if (!r.enabled) { clear(body, empty('Realtime is not enabled on this server.')); return; }
      const n = r.now;
      const ps = r.per_second || {};
      clear(body,
        h('dl', { class: 'stats' },
          [['Connections', n.connections], ['Channels', n.channels],
            ['Events in / s', ps.events_in ?? '—'], ['Events out / s', ps.events_out ?? '—'], ['Changes delivered / s', ps.changes_delivered ?? '—']]
            .map(([k, v]) => h('div', { class: 'stat', 'data-stat': k }, h('dt', {}, k), h('dd', {}, String(v))))),
        h('p', { class: 'muted' }, ps.window_secs ? `Rates over the last ${ps.window_secs} s.` : 'Rates appear after the first second.'),
        h('h2', {}, 'Totals since the server started'),
        simpleTable([{ 'connections accepted': n.connections_total, 'events in': n.events_in, 'events out': n.events_out, 'changes captured': n.changes_captured, 'changes delivered': n.changes_delivered, dropped: n.dropped, 'rate limited': n.rate_limited, 'joins refused': n.joins_refused, 'slot lag bytes': n.slot_lag_bytes }], 'realtime totals'),
        h('h2', {}, 'Last minute, per second'),
        simpleTable(r.last_minute.slice(-20).reverse().map((x) => ({ at: fmtDate(x.at), connections: x.connections, channels: x.channels, 'events in/s': x.events_in, 'events out/s': x.events_out })), 'realtime per second'));
    } catch (e) { if (first) clear(body, errorBox(e)); }
    first = false;
    setTimeout(load, 2000);
  }
  load();
}

async function apiPage(main) {
  clear(main, h('h1', {}, 'API'), loading());
  try {
    const [info, t] = await Promise.all([api('GET', '/api-info'), api('GET', '/tables')]);
    const url = info.url || location.origin;
    const keys = h('div', {});
    const show = h('button', { type: 'button', onclick: () => busy(show, keys, async () => {
      const k = await api('POST', '/keys', {});
      clear(keys, h('dl', {}, h('dt', {}, 'anon (public)'), h('dd', {}, h('code', { class: 'wrap' }, k.anon)), h('dt', {}, 'service_role (server only: bypasses RLS)'), h('dd', {}, h('code', { class: 'wrap' }, k.service_role))));
    }) }, 'Show keys');
    const pick = h('select', { 'aria-label': 'Table' }, t.tables.map((x) => h('option', { value: `${x.schema}.${x.name}` }, `${x.schema}.${x.name}`)));
    const docs = h('div', {});
    const drawDocs = async () => {
      const [schema, name] = pick.value.split('.');
      const m = await api('GET', `/tables/${enc(schema)}/${enc(name)}`);
      const sample = Object.fromEntries(m.columns.filter((c) => !c.has_default && !c.generated).slice(0, 4).map((c) => [c.name, c.category === 'N' ? 0 : c.type === 'boolean' ? false : '…']));
      const pk = m.primary_key[0] || m.columns[0].name;
      const from = schema === 'public' ? `supabase.from('${name}')` : `supabase.schema('${schema}').from('${name}')`;
      clear(docs,
        h('h3', {}, 'Columns'), simpleTable(m.columns.map((c) => ({ name: c.name, type: c.type, nullable: c.nullable, default: c.has_default })), 'columns'),
        h('h3', {}, 'Read'), h('pre', { class: 'mono' }, `const { data, error } = await ${from}\n  .select('*')\n  .order('${pk}')\n  .limit(100)`),
        m.kind === 'table' ? [
          h('h3', {}, 'Insert'), h('pre', { class: 'mono' }, `const { data, error } = await ${from}\n  .insert(${JSON.stringify(sample, null, 2)})\n  .select()`),
          h('h3', {}, 'Update'), h('pre', { class: 'mono' }, `const { data, error } = await ${from}\n  .update({ /* columns */ })\n  .eq('${pk}', id)\n  .select()`),
          h('h3', {}, 'Delete'), h('pre', { class: 'mono' }, `const { error } = await ${from}\n  .delete()\n  .eq('${pk}', id)`),
        ] : null,
        h('h3', {}, 'Call a function'), h('pre', { class: 'mono' }, "const { data, error } = await supabase.rpc('function_name', { arg: 'value' })"));
    };
    pick.addEventListener('change', () => drawDocs().catch((e) => clear(docs, errorBox(e))));
    clear(main, h('h1', {}, 'API'),
      h('dl', {}, h('dt', {}, 'URL'), h('dd', {}, h('code', {}, url))), show, keys,
      h('h2', {}, 'Client setup'), h('pre', { class: 'mono' }, `import { createClient } from '@supabase/supabase-js'\nconst supabase = createClient('${url}', ANON_KEY)`),
      h('h2', {}, 'Per table'), pick, docs);
    if (t.tables.length) drawDocs().catch((e) => clear(docs, errorBox(e)));
  } catch (e) { clear(main, h('h1', {}, 'API'), errorBox(e)); }
}

async function auditPage(main) {
  const list = h('div', {}, loading());
  const filter = h('input', { type: 'search', placeholder: 'Action prefix (e.g. tables., sql., auth.)', 'aria-label': 'Filter actions' });
  let entries = [];
  const more = h('button', { type: 'button' }, 'Load older');
  const draw = () => clear(list, entries.length ? grid([
    { key: 'at', label: 'When', render: (e) => fmtDate(e.at) },
    { key: 'admin', label: 'Who' },
    { key: 'action', label: 'Action' },
    { key: 'target', label: 'Target' },
    { key: 'detail', label: 'Detail', render: (e) => (e.detail ? cellText(e.detail) : '') },
    { key: 'ip', label: 'From' },
  ], entries, { label: 'audit log' }) : empty('No console actions recorded yet.'));
  async function load(reset) {
    await busy(more, list, async () => {
      const before = !reset && entries.length ? `&before=${entries[entries.length - 1].id}` : '';
      const r = await api('GET', `/audit?action=${enc(filter.value)}${before}`);
      entries = reset ? r.entries : entries.concat(r.entries);
      more.disabled = r.entries.length < 100;
      draw();
    });
  }
  more.addEventListener('click', () => load(false));
  filter.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') load(true); });
  clear(main, h('h1', {}, 'Audit log'), h('p', { class: 'muted' }, 'Every console action: who, what, when, from where. Append-only.'), h('div', { class: 'toolbar' }, filter), list, more);
  load(true);
}

export const pages = {
  tables: tablesPage,
  sql: sqlPage,
  auth: authPage,
  storage: storagePage,
  database: databasePage,
  ai: aiPage,
  logs: logsPage,
  realtime: realtimePage,
  api: apiPage,
  audit: auditPage,
};
