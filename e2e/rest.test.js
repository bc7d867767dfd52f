// /rest/v1 through the real supabase-js query builder. The Rust test `rest_supabase_js_e2e`
// seeds two tenants (crates/testkit/tests/it/rest.rs `fixture`) and passes user tokens:
// alice owns org A (clients Acme, Beta Co, Gamma; projects Acme Site, Acme App, Orphan,
// Beta Pitch), bob owns org B (client Bravo Secret).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { client, adminClient, anonKey } from './client.js';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set (run through cargo test rest_supabase_js_e2e)`);
  return v;
};
const ORG_A = env('REST_ORG_A');
const ORG_B = env('REST_ORG_B');
const ACME = env('REST_ACME');
const ACME_SITE = env('REST_ACME_SITE');

function as(token) {
  return client(anonKey, { global: { headers: { Authorization: `Bearer ${token}` } } });
}
const alice = as(env('REST_ALICE_TOKEN'));
const bob = as(env('REST_BOB_TOKEN'));
const anon = client();
const admin = adminClient();

const names = (data) => data.map((r) => r.name);
const sorted = (a) => [...a].sort();
function ok({ data, error, status }, want = 200) {
  assert.equal(error, null, `unexpected error: ${JSON.stringify(error)}`);
  assert.equal(status, want);
  return data;
}
const basis = (i) => Array.from({ length: 768 }, (_, k) => (k === i ? 1 : 0));

describe('select', () => {
  test('columns, aliases, casts, JSON paths', async () => {
    const data = ok(await alice.from('clients').select('name, score:health_score, value_cents::text').order('name'));
    assert.deepEqual(data, [
      { name: 'Acme', score: 80, value_cents: '1000' },
      { name: 'Beta Co', score: 40, value_cents: '5000' },
      { name: 'Gamma', score: 60, value_cents: null },
    ]);
    const svc = ok(await anon.from('services').select('slug, first:benefits->>0').eq('slug', 'crm-integration'));
    assert.deepEqual(svc, [{ slug: 'crm-integration', first: 'No double entry' }]);
  });

  test('nested embeds, !inner, hints, embedded filters/order/limit', async () => {
    const data = ok(
      await alice
        .from('clients')
        .select('name, projects(name, project_systems(system_id, systems(name)))')
        .eq('name', 'Acme')
        .order('name', { referencedTable: 'projects', ascending: false }),
    );
    assert.equal(data.length, 1);
    assert.deepEqual(names(data[0].projects), ['Acme Site', 'Acme App']);
    assert.equal(data[0].projects[0].project_systems.length, 2);
    assert.ok(data[0].projects[0].project_systems.every((ps) => typeof ps.systems.name === 'string'));

    const inner = ok(await alice.from('clients').select('name, projects!inner(name)').eq('projects.status', 'active'));
    assert.deepEqual(inner, [{ name: 'Acme', projects: [{ name: 'Acme Site' }] }]);

    const m2o = ok(await alice.from('projects').select('name, client:clients(name)').order('name'));
    assert.deepEqual(m2o.map((p) => p.client?.name ?? null), ['Acme', 'Acme', 'Beta Co', null]);
    const hinted = ok(await alice.from('project_systems').select('system:systems!system_id(name)').eq('system_id', 'lead-generation'));
    assert.deepEqual(hinted, [{ system: { name: 'AI Lead Generation' } }]);

    const limited = ok(
      await alice.from('clients').select('name, projects(name)').eq('name', 'Acme').limit(1, { referencedTable: 'projects' }).order('name', { referencedTable: 'projects' }),
    );
    assert.deepEqual(limited, [{ name: 'Acme', projects: [{ name: 'Acme App' }] }]);

    const orRef = ok(
      await alice
        .from('clients')
        .select('name, projects!inner(name)')
        .or('status.eq.discovery,progress.gte.50', { referencedTable: 'projects' })
        .order('name'),
    );
    assert.deepEqual(names(orRef), ['Acme', 'Beta Co']);
  });

  test('unknown relationship is PGRST200', async () => {
    const { data, error, status } = await alice.from('clients').select('name, nope(*)');
    assert.equal(data, null);
    assert.equal(status, 400);
    assert.equal(error.code, 'PGRST200');
    assert.ok(error.message.includes('relationship'));
    assert.ok('details' in error && 'hint' in error);
  });
});

describe('filters', () => {
  const cases = [
    ['eq', (q) => q.eq('status', 'client'), ['Acme']],
    ['neq', (q) => q.neq('status', 'client'), ['Beta Co', 'Gamma']],
    ['gt', (q) => q.gt('health_score', 60), ['Acme']],
    ['gte', (q) => q.gte('health_score', 60), ['Acme', 'Gamma']],
    ['lt', (q) => q.lt('health_score', 60), ['Beta Co']],
    ['lte', (q) => q.lte('health_score', 40), ['Beta Co']],
    ['like', (q) => q.like('name', '%Co'), ['Beta Co']],
    ['ilike', (q) => q.ilike('name', '%acme%'), ['Acme']],
    ['is null', (q) => q.is('industry', null), ['Gamma']],
    ['in', (q) => q.in('status', ['client', 'lead']), ['Acme', 'Gamma']],
    ['in with comma', (q) => q.in('notes', ['Cold, maybe', 'x']), ['Gamma']],
    ['not', (q) => q.not('notes', 'is', null), ['Beta Co', 'Gamma']],
    ['not in', (q) => q.not('status', 'in', '(client,lead)'), ['Beta Co']],
    ['or', (q) => q.or('status.eq.client,and(health_score.lt.50,notes.not.is.null)'), ['Acme', 'Beta Co']],
    ['filter', (q) => q.filter('health_score', 'gt', '50'), ['Acme', 'Gamma']],
    ['filter in', (q) => q.filter('name', 'in', '("Beta Co",Gamma)'), ['Beta Co', 'Gamma']],
    ['match', (q) => q.match({ status: 'prospect', industry: 'SaaS' }), ['Beta Co']],
    ['isDistinct', (q) => q.isDistinct('industry', 'SaaS'), ['Acme', 'Gamma']],
    ['regexMatch', (q) => q.regexMatch('name', '^B'), ['Beta Co']],
    ['likeAnyOf', (q) => q.likeAnyOf('name', ['A%', 'G%']), ['Acme', 'Gamma']],
    ['chained (AND)', (q) => q.gt('health_score', 30).lt('health_score', 70), ['Beta Co', 'Gamma']],
  ];
  for (const [label, f, want] of cases) {
    test(label, async () => {
      const data = ok(await f(alice.from('clients').select('name')));
      assert.deepEqual(sorted(names(data)), want);
    });
  }

  test('contains / containedBy / overlaps on arrays and jsonb', async () => {
    const first = async (q) => sorted(ok(await q).map((r) => r.first_name));
    assert.deepEqual(await first(alice.from('crm_contacts').select('first_name').contains('tags', ['vip'])), ['Ann']);
    assert.deepEqual(await first(alice.from('crm_contacts').select('first_name').containedBy('tags', ['vip', 'eu', 'x'])), ['Ann']);
    assert.deepEqual(await first(alice.from('crm_contacts').select('first_name').overlaps('tags', ['us', 'zz'])), ['Ben']);
    // jsonb: a string goes as is (an array would be sent as a PostgreSQL array literal)
    const svc = ok(await anon.from('services').select('slug').contains('features', JSON.stringify(['Two-way sync'])));
    assert.deepEqual(svc, [{ slug: 'crm-integration' }]);
  });

  test('textSearch, every type', async () => {
    for (const [q, opts] of [
      ['invoice', {}],
      ['invoices', { config: 'english' }],
      ['invoice automation', { type: 'plain' }],
      ['invoice automation', { type: 'phrase', config: 'english' }],
      ['invoice -website', { type: 'websearch' }],
    ]) {
      const data = ok(await alice.from('documents').select('name').textSearch('fts', q, opts));
      assert.deepEqual(names(data), ['Billing notes'], `${q} ${JSON.stringify(opts)}`);
    }
  });
});

describe('order, range, count', () => {
  test('order with nulls, range', async () => {
    const a = ok(await alice.from('clients').select('name').order('value_cents', { ascending: false, nullsFirst: false }));
    assert.deepEqual(names(a), ['Beta Co', 'Acme', 'Gamma']);
    const b = ok(await alice.from('clients').select('name').order('value_cents', { nullsFirst: true }));
    assert.deepEqual(names(b), ['Gamma', 'Acme', 'Beta Co']);
    const c = ok(await alice.from('clients').select('name').order('status').order('health_score', { ascending: false }));
    assert.deepEqual(names(c), ['Acme', 'Gamma', 'Beta Co']);
    const r = ok(await alice.from('clients').select('name').order('health_score', { ascending: false }).range(1, 2));
    assert.deepEqual(names(r), ['Gamma', 'Beta Co']);
  });

  test('count exact (206 when partial), head', async () => {
    const partial = await alice.from('clients').select('name', { count: 'exact' }).order('name').range(0, 1);
    assert.equal(partial.error, null);
    assert.equal(partial.status, 206);
    assert.equal(partial.count, 3);
    assert.equal(partial.data.length, 2);
    const head = await alice.from('clients').select('*', { count: 'exact', head: true });
    assert.equal(head.error, null);
    assert.equal(head.status, 200);
    assert.equal(head.count, 3);
    assert.equal(head.data, null);
    const planned = await alice.from('clients').select('*', { count: 'planned', head: true });
    assert.equal(planned.error, null);
    assert.equal(typeof planned.count, 'number');
    const inner = await alice.from('clients').select('name, projects!inner(id)', { count: 'exact', head: true }).eq('projects.status', 'draft');
    assert.equal(inner.count, 1);
  });
});

describe('single, maybeSingle, csv', () => {
  test('single()', async () => {
    const data = ok(await alice.from('clients').select('name, health_score').eq('name', 'Acme').single());
    assert.deepEqual(data, { name: 'Acme', health_score: 80 });
    const many = await alice.from('clients').select('name').single();
    assert.equal(many.status, 406);
    assert.equal(many.error.code, 'PGRST116');
    assert.equal(many.error.details, 'The result contains 3 rows');
    const none = await alice.from('clients').select('name').eq('name', 'zzz').single();
    assert.equal(none.error.code, 'PGRST116');
    assert.equal(none.error.details, 'The result contains 0 rows');
  });

  test('maybeSingle()', async () => {
    const one = ok(await alice.from('clients').select('name').eq('name', 'Gamma').maybeSingle());
    assert.deepEqual(one, { name: 'Gamma' });
    const none = await alice.from('clients').select('name').eq('name', 'zzz').maybeSingle();
    assert.equal(none.error, null);
    assert.equal(none.data, null);
    const many = await alice.from('clients').select('name').maybeSingle();
    assert.equal(many.error.code, 'PGRST116');
    // on a mutation (object Accept on the wire)
    const upd = await alice.from('clients').update({ notes: 'n' }).eq('name', 'zzz').select().maybeSingle();
    assert.equal(upd.error, null, JSON.stringify(upd.error));
    assert.equal(upd.data, null);
  });

  test('csv()', async () => {
    const { data, error } = await alice.from('clients').select('name, health_score').order('name').csv();
    assert.equal(error, null);
    assert.equal(data.trim(), 'name,health_score\nAcme,80\n"Beta Co",40\nGamma,60');
  });
});

describe('writes', () => {
  test('insert with select(), bulk with union of keys, defaultToNull:false', async () => {
    const one = ok(await alice.from('clients').insert({ org_id: ORG_A, name: 'Delta' }).select('name, status, health_score').single(), 201);
    assert.deepEqual(one, { name: 'Delta', status: 'lead', health_score: 50 });
    const bulk = ok(
      await alice
        .from('clients')
        .insert([
          { org_id: ORG_A, name: 'Eps', notes: 'x' },
          { org_id: ORG_A, name: 'Zeta' },
        ])
        .select('name, notes'),
      201,
    );
    assert.deepEqual(bulk, [{ name: 'Eps', notes: 'x' }, { name: 'Zeta', notes: null }]);
    // missing keys become NULL (health_score is NOT NULL) unless defaultToNull: false
    const bad = await alice.from('clients').insert([{ org_id: ORG_A, name: 'Eta', health_score: 1 }, { org_id: ORG_A, name: 'Theta' }]);
    assert.equal(bad.status, 400);
    assert.equal(bad.error.code, '23502');
    const good = ok(
      await alice
        .from('clients')
        .insert([{ org_id: ORG_A, name: 'Eta', health_score: 1 }, { org_id: ORG_A, name: 'Theta' }], { defaultToNull: false })
        .select('name, health_score'),
      201,
    );
    assert.deepEqual(good, [{ name: 'Eta', health_score: 1 }, { name: 'Theta', health_score: 50 }]);
    const minimal = await alice.from('clients').insert({ org_id: ORG_A, name: 'Iota' });
    assert.equal(minimal.error, null);
    assert.equal(minimal.status, 201);
    assert.equal(minimal.data, null);
    const counted = await alice.from('clients').insert({ org_id: ORG_A, name: 'Kappa' }, { count: 'exact' });
    assert.equal(counted.count, 1);
  });

  test('upsert merge / ignore with onConflict', async () => {
    const merged = ok(
      await alice
        .from('project_systems')
        .upsert(
          [
            { org_id: ORG_A, project_id: ACME_SITE, system_id: 'lead-generation', why_it_matters: 'leads' },
            { org_id: ORG_A, project_id: ACME_SITE, system_id: 'content-engine', why_it_matters: 'content' },
          ],
          { onConflict: 'project_id,system_id' },
        )
        .select('system_id, why_it_matters'),
      201,
    );
    assert.deepEqual(sorted(merged.map((r) => `${r.system_id}:${r.why_it_matters}`)), ['content-engine:content', 'lead-generation:leads']);
    const updatedOnly = await alice
      .from('project_systems')
      .upsert({ org_id: ORG_A, project_id: ACME_SITE, system_id: 'content-engine', why_it_matters: 'again' }, { onConflict: 'project_id,system_id' });
    assert.equal(updatedOnly.error, null);
    assert.equal(updatedOnly.status, 200);
    const ignored = ok(
      await alice
        .from('project_systems')
        .upsert({ org_id: ORG_A, project_id: ACME_SITE, system_id: 'content-engine', why_it_matters: 'ignored' }, { onConflict: 'project_id,system_id', ignoreDuplicates: true })
        .select(),
      201,
    );
    assert.deepEqual(ignored, []);
    const row = ok(await alice.from('project_systems').select('why_it_matters').eq('system_id', 'content-engine').single());
    assert.equal(row.why_it_matters, 'again');
  });

  test('invoice, payment and deal keep their char(3) currency', async () => {
    const inv = ok(
      await alice
        .from('invoices')
        .insert({ org_id: ORG_A, client_id: ACME, invoice_number: 'E2E-CUR-1', amount_cents: 25000, currency: 'EUR', status: 'sent' })
        .select('id, currency, status')
        .single(),
      201,
    );
    assert.equal(inv.currency, 'EUR');
    const pay = ok(
      await alice
        .from('payments')
        .insert({ org_id: ORG_A, invoice_id: inv.id, amount_cents: 25000, currency: 'EUR', status: 'completed' })
        .select('currency, status')
        .single(),
      201,
    );
    assert.deepEqual(pay, { currency: 'EUR', status: 'completed' });
    // the payment covers the invoice (handle_payment_change)
    assert.deepEqual(ok(await alice.from('invoices').select('status, currency').eq('id', inv.id).single()), { status: 'paid', currency: 'EUR' });
    // a payment in another currency than its invoice's is refused
    const other = await alice.from('payments').insert({ org_id: ORG_A, invoice_id: inv.id, amount_cents: 1, currency: 'USD' });
    assert.equal(other.status, 400);
    assert.equal(other.error.code, '23514');

    const deal = ok(
      await alice
        .from('crm_deals')
        .insert({ org_id: ORG_A, client_id: ACME, title: 'E2E retainer', amount_cents: 900000, currency: 'GBP' })
        .select('id, currency')
        .single(),
      201,
    );
    assert.equal(deal.currency, 'GBP');
    // filters compare the whole value
    assert.deepEqual(ok(await alice.from('crm_deals').select('title').eq('currency', 'GBP')), [{ title: 'E2E retainer' }]);
    assert.deepEqual(ok(await alice.from('crm_deals').select('title').in('currency', ['GBP', 'CHF'])), [{ title: 'E2E retainer' }]);
    assert.deepEqual(ok(await alice.from('crm_deals').select('title').eq('currency', 'GBPX')), []);
    // update and upsert
    const upd = ok(await alice.from('crm_deals').update({ currency: 'CHF' }).eq('id', deal.id).select('currency').single());
    assert.equal(upd.currency, 'CHF');
    const ups = ok(
      await alice
        .from('crm_deals')
        .upsert({ id: deal.id, org_id: ORG_A, client_id: ACME, title: 'E2E retainer', currency: 'JPY' })
        .select('currency')
        .single(),
    );
    assert.equal(ups.currency, 'JPY');
    // an over-long currency is refused, never truncated
    const long = await alice.from('crm_deals').update({ currency: 'EURO' }).eq('id', deal.id);
    assert.equal(long.status, 400);
    assert.equal(long.error.code, '22001');
    assert.deepEqual(ok(await alice.from('crm_deals').select('currency').eq('id', deal.id).single()), { currency: 'JPY' });
  });

  test('update and delete with filters and select()', async () => {
    const upd = ok(await alice.from('clients').update({ status: 'churned' }).gte('health_score', 60).select('name, status').order('name'));
    assert.deepEqual(upd, [{ name: 'Acme', status: 'churned' }, { name: 'Gamma', status: 'churned' }]);
    const silent = await alice.from('clients').update({ notes: 'x' }).eq('name', 'Gamma');
    assert.equal(silent.error, null);
    assert.equal(silent.status, 204);
    const del = ok(await alice.from('projects').delete().eq('name', 'Orphan').select('name'));
    assert.deepEqual(del, [{ name: 'Orphan' }]);
    const again = ok(await alice.from('projects').select('name').eq('name', 'Orphan'));
    assert.deepEqual(again, []);
  });
});

describe('rpc', () => {
  test('scalar, setof table with filters, GET, vectors', async () => {
    const cls = ok(await alice.rpc('get_client_classification', { p_client_id: ACME }));
    assert.equal(cls.client_id, ACME);
    assert.ok('crm_classification' in cls);
    const viaGet = ok(await alice.rpc('get_client_classification', { p_client_id: ACME }, { get: true }));
    assert.equal(viaGet.client_id, ACME);
    const docs = ok(await alice.rpc('match_documents', { query_embedding: basis(0), match_count: 5 }).select('name, similarity'));
    assert.deepEqual(names(docs), ['Acme proposal', 'Billing notes']);
    assert.ok(Math.abs(docs[0].similarity - 1) < 1e-6);
    const filtered = ok(await alice.rpc('match_documents', { query_embedding: basis(0) }).select('name').lt('similarity', 0.5));
    assert.deepEqual(names(filtered), ['Billing notes']);
    const hybrid = ok(
      await alice.rpc('hybrid_search_documents', { query_text: 'invoice automation', query_embedding: basis(1), match_count: 5 }).select('name, score').limit(1),
    );
    assert.deepEqual(names(hybrid), ['Billing notes']);
    const bobs = ok(await bob.rpc('match_documents', { query_embedding: basis(0) }).select('name'));
    assert.deepEqual(names(bobs), ['Bravo proposal']);
    const count = await alice.rpc('match_documents', { query_embedding: basis(0) }, { count: 'exact' });
    assert.equal(count.count, 2);
  });

  test('errors: not found, volatile via GET, anon without EXECUTE', async () => {
    const nf = await alice.rpc('nope', {});
    assert.equal(nf.status, 404);
    assert.equal(nf.error.code, 'PGRST202');
    const vol = await alice.rpc('create_context_snapshot', { project_id: ACME_SITE }, { get: true });
    assert.equal(vol.status, 405);
    const denied = await anon.rpc('create_context_snapshot', { project_id: ACME_SITE });
    assert.equal(denied.status, 401);
    assert.equal(denied.error.code, '42501');
    const made = ok(await alice.rpc('create_context_snapshot', { project_id: ACME_SITE, summary: 's' }));
    assert.equal(made.version, 1);
  });
});

describe('errors and isolation', () => {
  test('error objects carry code, message, details, hint', async () => {
    const dup = await alice.from('project_systems').insert({ org_id: ORG_A, project_id: ACME_SITE, system_id: 'lead-generation' });
    assert.equal(dup.status, 409);
    assert.equal(dup.error.code, '23505');
    assert.ok(dup.error.message.includes('duplicate key'));
    assert.ok('details' in dup.error && 'hint' in dup.error);
    const forbidden = await alice.from('systems').insert({ id: 'x', name: 'X' });
    assert.equal(forbidden.status, 403);
    assert.equal(forbidden.error.code, '42501');
    const anonWrite = await anon.from('clients').insert({ org_id: ORG_A, name: 'x' });
    assert.equal(anonWrite.status, 401);
    const badUuid = await alice.from('clients').select().eq('id', 'not-a-uuid');
    assert.equal(badUuid.status, 400);
    assert.equal(badUuid.error.code, '22P02');
    const col = await alice.from('clients').insert({ org_id: ORG_A, name: 'x', nope: 1 });
    assert.equal(col.error.code, 'PGRST204');
    const table = await alice.from('nope').select();
    assert.equal(table.status, 404);
    const schema = await alice.schema('private').from('embedding_jobs').select();
    assert.equal(schema.status, 406);
    assert.equal(schema.error.code, 'PGRST106');
  });

  test('a member of org A never sees org B', async () => {
    assert.deepEqual(ok(await alice.from('clients').select('id').eq('org_id', ORG_B)), []);
    const mine = names(ok(await alice.from('client_crm_status').select('name')));
    assert.ok(mine.includes('Beta Co') && !mine.includes('Bravo Secret'), JSON.stringify(mine));
    assert.deepEqual(names(ok(await bob.from('client_crm_status').select('name'))), ['Bravo Secret']);
    const orgs = ok(await alice.from('organizations').select('id, clients(name)'));
    assert.deepEqual(orgs.map((o) => o.id), [ORG_A]);
    const all = ok(await admin.from('clients').select('name'));
    assert.ok(names(all).includes('Bravo Secret') && names(all).includes('Acme'));
    assert.deepEqual(ok(await anon.from('clients').select('id')), []);
    assert.equal(ok(await anon.from('systems').select('id')).length, 8);
  });
});
