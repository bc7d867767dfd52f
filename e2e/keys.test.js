// supabase-js getClaims() against asymmetric signing keys (GOTRUE_JWT_KEYS): the access token
// is verified locally with WebCrypto through /auth/v1/.well-known/jwks.json, without asking
// the server about the user. EXPECTED_ALG (RS256 or ES256) is the server's signing algorithm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, anonKey, email } from './client.js';

const PASSWORD = 'correct-horse-battery';
const expectedAlg = process.env.EXPECTED_ALG;

/** A client whose requests are recorded (path of every URL fetched). */
function recordingClient() {
  const seen = [];
  const supabase = client(anonKey, {
    global: {
      fetch: (input, init) => {
        seen.push(new URL(typeof input === 'string' ? input : input.url).pathname);
        return fetch(input, init);
      },
    },
  });
  return { supabase, seen };
}

test(`getClaims verifies an ${expectedAlg} access token locally through the JWKS`, async () => {
  assert.ok(expectedAlg === 'RS256' || expectedAlg === 'ES256', `EXPECTED_ALG=${expectedAlg}`);
  const { supabase, seen } = recordingClient();
  const addr = email('claims');
  const { data: up, error: upErr } = await supabase.auth.signUp({ email: addr, password: PASSWORD });
  assert.equal(upErr, null);
  assert.ok(up.session, 'autoconfirm gives a session');

  seen.length = 0;
  const { data, error } = await supabase.auth.getClaims();
  assert.equal(error, null);
  assert.equal(data.header.alg, expectedAlg);
  assert.ok(data.header.kid);
  assert.equal(data.claims.sub, up.user.id);
  assert.equal(data.claims.email, addr);
  assert.equal(data.claims.role, 'authenticated');
  // Verified with the published key: the JWKS was read, the user endpoint never asked.
  assert.deepEqual(seen, ['/auth/v1/.well-known/jwks.json']);

  // The key set is cached: a second verification makes no request at all.
  seen.length = 0;
  const again = await supabase.auth.getClaims();
  assert.equal(again.error, null);
  assert.deepEqual(seen, []);

  // A token whose payload was altered fails the signature check, locally.
  const [h, p, s] = up.session.access_token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
  claims.role = 'service_role';
  const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
  const bad = await supabase.auth.getClaims(forged);
  assert.equal(bad.data, null);
  assert.match(bad.error.message, /Invalid JWT signature/);
  assert.deepEqual(seen, []);

  // And the server agrees the real token is good (getUser asks it).
  const { data: u, error: uErr } = await supabase.auth.getUser();
  assert.equal(uErr, null);
  assert.equal(u.user.id, up.user.id);
});
