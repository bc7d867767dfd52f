// supabase-js sign-in with an external provider against agencyflow's /auth/v1 and the mock
// OpenID provider the Rust harness started (GOTRUE_EXTERNAL_KEYCLOAK_URL points at it):
// signInWithOAuth (PKCE) followed through the redirects as a browser would, then
// exchangeCodeForSession; and signInWithIdToken with an ID token the mock signed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { url, anonKey } from './client.js';

const APP = 'http://app.test/welcome';

function pkceClient() {
  const store = new Map();
  return createClient(url, anonKey, {
    auth: {
      flowType: 'pkce',
      persistSession: true,
      autoRefreshToken: false,
      detectSessionInUrl: false,
      storage: {
        getItem: (k) => store.get(k) ?? null,
        setItem: (k, v) => store.set(k, v),
        removeItem: (k) => store.delete(k),
      },
    },
    realtime: { transport: WebSocket },
  });
}

/** Follows redirects by hand (as a browser would) until one leads to the app. */
async function browse(start) {
  let next = start;
  for (let hops = 0; hops < 6; hops += 1) {
    if (next.startsWith(APP)) return next;
    const r = await fetch(next, { redirect: 'manual' });
    assert.ok(r.status >= 300 && r.status < 400, `${next} answered ${r.status}: ${await r.text()}`);
    next = new URL(r.headers.get('location'), next).toString();
  }
  throw new Error(`never reached the app: ${next}`);
}

test('signInWithOAuth (PKCE) + exchangeCodeForSession', async () => {
  const supabase = pkceClient();
  const { data, error } = await supabase.auth.signInWithOAuth({
    provider: 'keycloak',
    options: { skipBrowserRedirect: true, redirectTo: APP },
  });
  assert.equal(error, null);
  assert.equal(data.provider, 'keycloak');
  assert.match(data.url, /code_challenge=/);

  const landing = new URL(await browse(data.url));
  assert.equal(landing.searchParams.get('error'), null, landing.toString());
  const code = landing.searchParams.get('code');
  assert.ok(code);

  const { data: s, error: exErr } = await supabase.auth.exchangeCodeForSession(code);
  assert.equal(exErr, null);
  assert.equal(s.session.user.email, process.env.MOCK_EMAIL);
  assert.equal(s.session.user.identities[0].provider, 'keycloak');
  assert.ok(s.session.provider_token);

  const { data: u } = await supabase.auth.getUser();
  assert.equal(u.user.id, s.session.user.id);
  assert.equal(u.user.app_metadata.provider, 'keycloak');

  // The code works once.
  const again = pkceClient();
  const { error: reuse } = await again.auth.exchangeCodeForSession(code);
  assert.ok(reuse);
});

test('signInWithOAuth with a disabled provider', async () => {
  const supabase = pkceClient();
  const { data } = await supabase.auth.signInWithOAuth({
    provider: 'github',
    options: { skipBrowserRedirect: true, redirectTo: APP },
  });
  const r = await fetch(data.url, { redirect: 'manual' });
  assert.equal(r.status, 400);
  const body = await r.json();
  assert.equal(body.error_code, 'validation_failed');
  assert.equal(body.msg, 'Unsupported provider: provider is not enabled');
});

test('signInWithIdToken', async () => {
  const supabase = pkceClient();
  const { data, error } = await supabase.auth.signInWithIdToken({
    provider: 'keycloak',
    token: process.env.ID_TOKEN,
    nonce: process.env.RAW_NONCE,
  });
  assert.equal(error, null);
  assert.equal(data.user.email, process.env.ID_EMAIL);
  assert.equal(data.session.user.identities[0].provider, 'keycloak');

  const { error: badNonce } = await pkceClient().auth.signInWithIdToken({
    provider: 'keycloak',
    token: process.env.ID_TOKEN,
    nonce: 'not-the-nonce',
  });
  assert.ok(badNonce);
  assert.match(badNonce.message, /Nonces mismatch/);
});
