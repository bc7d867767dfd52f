// supabase-js `functions.invoke` against /functions/v1 (the Rust harness starts the server with
// a mock model provider and passes a user token and a wizard session in the environment).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FunctionsHttpError } from '@supabase/supabase-js';
import { client } from './client.js';

const token = process.env.FUNCTIONS_E2E_TOKEN;
const sessionId = process.env.FUNCTIONS_E2E_SESSION;
const auth = { Authorization: `Bearer ${token}` };

test('signed out: 401 with a JSON body apps can read', async () => {
  const { data, error } = await client().functions.invoke('analyze-business', { body: { session_id: sessionId, data: { a: 1 } } });
  assert.equal(data, null);
  assert.ok(error instanceof FunctionsHttpError);
  assert.equal(error.context.status, 401);
  const body = await error.context.json();
  assert.equal(body.msg, 'Invalid JWT');
});

test('a signed-in user runs wizard step 1 and gets the structured result', async () => {
  const { data, error } = await client().functions.invoke('analyze-business', {
    headers: auth,
    body: { session_id: sessionId, data: { business_name: 'Acme', industry: 'dental' } },
  });
  assert.equal(error, null);
  assert.equal(data.step, 1);
  assert.equal(typeof data.result.summary, 'string');
  assert.ok(Array.isArray(data.result.opportunities));
});

test('bad input: 400 naming the field', async () => {
  const { error } = await client().functions.invoke('analyze-business', { headers: auth, body: { data: { a: 1 } } });
  assert.ok(error instanceof FunctionsHttpError);
  assert.equal(error.context.status, 400);
  const body = await error.context.json();
  assert.equal(body.field, 'session_id');
});

test('embed and search', async () => {
  const { data, error } = await client().functions.invoke('embed', { headers: auth, body: { text: 'invoice automation' } });
  assert.equal(error, null);
  assert.equal(data.embeddings[0].length, 768);
  const s = await client().functions.invoke('search', { headers: auth, body: { query: 'invoice' } });
  assert.equal(s.error, null);
  assert.ok(Array.isArray(s.data.documents));
});

test('intelligence-stream arrives as an event stream', async () => {
  const { data, error } = await client().functions.invoke('intelligence-stream', { headers: auth, body: { question: 'Status?' } });
  assert.equal(error, null);
  // supabase-js hands an event stream over as the raw Response (older versions: its body).
  const text = typeof data.text === 'function' ? await data.text() : await new Response(data).text();
  assert.match(text, /"type":"delta"/);
  assert.match(text, /"type":"done"/);
});
