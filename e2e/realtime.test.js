// /realtime/v1 with the real supabase-js (realtime-js 2.109 over `ws`): postgres_changes under
// RLS, filters, a signed-out client, a token switched to another user, broadcast with self
// and ack, presence between two clients, removeChannel, private channels.
// Driven by crates/testkit/tests/realtime (e2e_supabase_js), which prepares two users with
// their organisations and roadmap phases and passes them in the environment.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { client, adminClient } from './client.js';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} must be set (run through cargo test)`);
  return v;
};
const ALICE = env('RT_ALICE_TOKEN');
const BOB = env('RT_BOB_TOKEN');
const ORG_A = env('RT_ORG_A');
const ORG_B = env('RT_ORG_B');
const PHASE_A = env('RT_PHASE_A');
const PHASE_A2 = env('RT_PHASE_A2');
const PHASE_B = env('RT_PHASE_B');

const clients = [];
/** A signed-in client. Its token is set before the first join: realtime-js fetches it
 * asynchronously on connect, and a join sent before that goes out with the API key. */
async function userClient(token) {
  const holder = { token };
  const c = client(undefined, { accessToken: async () => holder.token });
  clients.push(c);
  await c.realtime.setAuth();
  return { c, holder };
}
after(async () => {
  for (const c of clients) await c.removeAllChannels();
});

const admin = adminClient();
clients.push(admin);

/** Resolves once the channel is SUBSCRIBED and (with postgres_changes) capture covers it. */
function subscribe(channel, { changes = true } = {}) {
  return new Promise((resolve, reject) => {
    let subscribed = false;
    let captured = !changes;
    const done = () => subscribed && captured && resolve(channel);
    if (changes) {
      channel.on('system', {}, (p) => {
        if (p.extension === 'postgres_changes' && p.status === 'ok') {
          captured = true;
          done();
        } else if (p.status === 'error') {
          reject(new Error(`system error: ${p.message}`));
        }
      });
    }
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') {
        subscribed = true;
        done();
      } else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
        reject(err ?? new Error(status));
      }
    });
  });
}

/** Collects events; `until(n)` waits for n of them (with a deadline). */
function collector() {
  const events = [];
  let waiters = [];
  const push = (e) => {
    events.push(e);
    waiters = waiters.filter((w) => !w());
  };
  const until = (n, ms = 15000) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`only ${events.length} of ${n} events: ${JSON.stringify(events)}`)), ms);
      const check = () => {
        if (events.length >= n) {
          clearTimeout(t);
          resolve(events);
          return true;
        }
        return false;
      };
      if (!check()) waiters.push(check);
    });
  return { events, push, until };
}

async function insertTask(org_id, phase_id, title) {
  const { data, error } = await admin.from('tasks').insert({ org_id, phase_id, title }).select().single();
  assert.equal(error, null, JSON.stringify(error));
  return data;
}

test('a member sees INSERT/UPDATE/DELETE of its org tasks and none of another org', async () => {
  const { c } = await userClient(ALICE);
  const got = collector();
  const ch = c
    .channel('tasks-a')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'tasks' }, (p) => got.push(p));
  await subscribe(ch);
  const b = await insertTask(ORG_B, PHASE_B, 'bob secret');
  await admin.from('tasks').update({ title: 'bob secret 2' }).eq('id', b.id);
  await admin.from('tasks').delete().eq('id', b.id);
  const a = await insertTask(ORG_A, PHASE_A, 'alice task');
  await admin.from('tasks').update({ status: 'done' }).eq('id', a.id);
  await admin.from('tasks').delete().eq('id', a.id);
  const events = await got.until(3);
  assert.deepEqual(events.map((e) => e.eventType), ['INSERT', 'UPDATE', 'DELETE']);
  assert.equal(events[0].new.id, a.id);
  assert.equal(events[0].new.title, 'alice task');
  assert.deepEqual(events[0].new.tags, []);
  assert.equal(events[1].new.status, 'done');
  assert.equal(events[1].old.status, 'todo');
  assert.deepEqual(events[2].old, { id: a.id });
  assert.equal(events[0].table, 'tasks');
  assert.ok(!JSON.stringify(events).includes('bob secret'));
});

test('a filter phase_id=eq.<id> narrows the stream', async () => {
  const { c } = await userClient(ALICE);
  const got = collector();
  const ch = c
    .channel('tasks-filtered')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks', filter: `phase_id=eq.${PHASE_A2}` }, (p) =>
      got.push(p),
    );
  await subscribe(ch);
  await insertTask(ORG_A, PHASE_A, 'other phase');
  const t = await insertTask(ORG_A, PHASE_A2, 'this phase');
  const events = await got.until(1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(events.length, 1);
  assert.equal(events[0].new.id, t.id);
});

test('a signed-out client sees only what anon may see (no tasks)', async () => {
  const anon = client();
  clients.push(anon);
  const got = collector();
  const ch = anon.channel('anon-tasks').on('postgres_changes', { event: '*', schema: 'public', table: 'tasks' }, (p) => got.push(p));
  await subscribe(ch);
  // A signed-in watcher on the same change proves it was delivered before we look.
  const { c } = await userClient(ALICE);
  const seen = collector();
  await subscribe(c.channel('anon-witness').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks' }, (p) => seen.push(p)));
  await insertTask(ORG_A, PHASE_A, 'not for anon');
  await seen.until(1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.events.length, 0);
});

test('a token refresh to another user changes what arrives', async () => {
  const { c, holder } = await userClient(ALICE);
  const got = collector();
  const ch = c.channel('switch').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks' }, (p) => got.push(p));
  await subscribe(ch);
  await insertTask(ORG_A, PHASE_A, 'for alice');
  await got.until(1);
  holder.token = BOB;
  await c.realtime.setAuth();
  // Give the access_token push a round trip: a broadcast ack on another channel of the socket.
  const probe = c.channel('switch-probe', { config: { broadcast: { ack: true } } });
  await subscribe(probe, { changes: false });
  assert.equal(await probe.send({ type: 'broadcast', event: 'x', payload: {} }), 'ok');
  await insertTask(ORG_A, PHASE_A, 'alice after switch');
  await insertTask(ORG_B, PHASE_B, 'for bob');
  const events = await got.until(2);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(got.events.map((e) => e.new.title), ['for alice', 'for bob']);
  assert.equal(events[1].new.org_id, ORG_B);
});

test('broadcast with self and ack', async () => {
  const { c } = await userClient(ALICE);
  const other = (await userClient(BOB)).c;
  const mine = collector();
  const theirs = collector();
  const a = c.channel('room-1', { config: { broadcast: { self: true, ack: true } } }).on('broadcast', { event: 'cursor' }, (p) => mine.push(p));
  const b = other.channel('room-1').on('broadcast', { event: 'cursor' }, (p) => theirs.push(p));
  await subscribe(a, { changes: false });
  await subscribe(b, { changes: false });
  assert.equal(await a.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } }), 'ok');
  const [m] = await mine.until(1);
  const [t] = await theirs.until(1);
  assert.deepEqual(m.payload, { x: 1 });
  assert.deepEqual(t.payload, { x: 1 });
  assert.equal(t.event, 'cursor');
  // httpSend reaches subscribers too.
  const res = await b.httpSend('cursor', { x: 2 });
  assert.deepEqual(res, { success: true });
  await mine.until(2);
  assert.deepEqual(mine.events[1].payload, { x: 2 });
});

test('presence join and leave between two clients', async () => {
  const one = (await userClient(ALICE)).c;
  const two = (await userClient(BOB)).c;
  const joins = collector();
  const leaves = collector();
  const a = one.channel('lobby', { config: { presence: { key: 'alice' } } });
  a.on('presence', { event: 'join' }, (p) => joins.push(p)).on('presence', { event: 'leave' }, (p) => leaves.push(p));
  await subscribe(a, { changes: false });
  const b = two.channel('lobby', { config: { presence: { key: 'bob' } } });
  b.on('presence', { event: 'sync' }, () => {});
  await subscribe(b, { changes: false });
  assert.equal(await b.track({ status: 'online' }), 'ok');
  await joins.until(1);
  const j = joins.events.find((e) => e.key === 'bob');
  assert.ok(j, JSON.stringify(joins.events));
  assert.equal(j.newPresences[0].status, 'online');
  assert.ok(a.presenceState().bob);
  await two.removeChannel(b);
  await leaves.until(1);
  assert.equal(leaves.events[0].key, 'bob');
  assert.equal(a.presenceState().bob, undefined);
});

test('removeChannel stops delivery', async () => {
  const { c } = await userClient(ALICE);
  const got = collector();
  const ch = c.channel('leaving').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks' }, (p) => got.push(p));
  await subscribe(ch);
  await insertTask(ORG_A, PHASE_A, 'before');
  await got.until(1);
  assert.equal(await c.removeChannel(ch), 'ok');
  const { c: w } = await userClient(ALICE);
  const seen = collector();
  await subscribe(w.channel('leaving-witness').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks' }, (p) => seen.push(p)));
  await insertTask(ORG_A, PHASE_A, 'after');
  await seen.until(1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.events.length, 1);
});

test('a private channel is refused without a policy and accepted with one', async () => {
  const { c } = await userClient(ALICE);
  const refused = c.channel('secret-room', { config: { private: true } });
  await assert.rejects(subscribe(refused, { changes: false }), /permissions to read/);
  await c.removeChannel(refused);
  const got = collector();
  const ok = c.channel('team-room', { config: { private: true, broadcast: { self: true, ack: true } } }).on('broadcast', { event: 'note' }, (p) => got.push(p));
  await subscribe(ok, { changes: false });
  assert.equal(await ok.send({ type: 'broadcast', event: 'note', payload: { hi: 1 } }), 'ok');
  await got.until(1);
  // Bob is not allowed by the policy.
  const { c: bob } = await userClient(BOB);
  await assert.rejects(subscribe(bob.channel('team-room', { config: { private: true } }), { changes: false }), /permissions to read/);
});
