// supabase-js MFA (TOTP) against agencyflow's /auth/v1: enroll, challenge, verify,
// getAuthenticatorAssuranceLevel, listFactors, unenroll, and the admin factor API. TOTP codes
// are computed here (RFC 6238 with node's crypto) from the secret the server returned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { client, adminClient, email } from './client.js';

const PASSWORD = 'correct-horse-battery';

function base32Decode(s) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of s.replace(/=+$/, '')) {
    value = (value << 5) | alphabet.indexOf(c);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const h = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const o = h[h.length - 1] & 0x0f;
  const n = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(n % 1_000_000).padStart(6, '0');
}

const currentStep = () => Math.floor(Date.now() / 1000 / 30);

test('mfa.enroll, challenge, verify, getAuthenticatorAssuranceLevel, unenroll', async () => {
  const supabase = client();
  const addr = email('mfa');
  const { data: up, error: upErr } = await supabase.auth.signUp({ email: addr, password: PASSWORD });
  assert.equal(upErr, null);
  const userId = up.user.id;

  let { data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.currentLevel, 'aal1');
  assert.equal(aal.nextLevel, 'aal1');

  const { data: factor, error: enrollErr } = await supabase.auth.mfa.enroll({
    factorType: 'totp',
    friendlyName: 'Authenticator',
    issuer: 'Agency',
  });
  assert.equal(enrollErr, null);
  assert.equal(factor.type, 'totp');
  assert.equal(factor.friendly_name, 'Authenticator');
  assert.ok(factor.totp.qr_code.startsWith('data:image/svg+xml;utf-8,<svg'), factor.totp.qr_code.slice(0, 40));
  assert.match(factor.totp.secret, /^[A-Z2-7]{32}$/);
  assert.ok(factor.totp.uri.startsWith(`otpauth://totp/Agency:${addr}?`), factor.totp.uri);

  // Unverified: listed under `all` only, and not yet a next level.
  await supabase.auth.refreshSession();
  let { data: factors } = await supabase.auth.mfa.listFactors();
  assert.equal(factors.all.length, 1);
  assert.equal(factors.totp.length, 0);
  ({ data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.nextLevel, 'aal1');

  const events = [];
  supabase.auth.onAuthStateChange((event) => events.push(event));
  const step = currentStep();
  const { data: challenge, error: chErr } = await supabase.auth.mfa.challenge({ factorId: factor.id });
  assert.equal(chErr, null);
  assert.ok(challenge.expires_at > Date.now() / 1000);
  const { error: wrongErr } = await supabase.auth.mfa.verify({
    factorId: factor.id,
    challengeId: challenge.id,
    code: totp(factor.totp.secret, step + 3),
  });
  assert.equal(wrongErr.status, 422);
  assert.equal(wrongErr.code, 'mfa_verification_failed');
  const { data: verified, error: vErr } = await supabase.auth.mfa.verify({
    factorId: factor.id,
    challengeId: challenge.id,
    code: totp(factor.totp.secret, step),
  });
  assert.equal(vErr, null);
  assert.ok(verified.access_token);
  assert.ok(events.includes('MFA_CHALLENGE_VERIFIED'), events.join(','));

  ({ data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal2');
  assert.equal(aal.nextLevel, 'aal2');
  assert.deepEqual(aal.currentAuthenticationMethods.map((m) => m.method), ['totp', 'password']);
  ({ data: factors } = await supabase.auth.mfa.listFactors());
  assert.equal(factors.totp.length, 1);
  assert.equal(factors.totp[0].status, 'verified');

  // A refresh keeps aal2.
  const { data: ref, error: refErr } = await supabase.auth.refreshSession();
  assert.equal(refErr, null);
  ({ data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal2');
  ({ data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel(ref.session.access_token));
  assert.equal(aal.currentLevel, 'aal2');

  // A new sign-in with the password alone is aal1 and needs the second factor (nextLevel).
  const other = client();
  assert.equal((await other.auth.signInWithPassword({ email: addr, password: PASSWORD })).error, null);
  ({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal1');
  assert.equal(aal.nextLevel, 'aal2');
  const { error: weakUnenroll } = await other.auth.mfa.unenroll({ factorId: factor.id });
  assert.equal(weakUnenroll.status, 422);
  assert.equal(weakUnenroll.code, 'insufficient_aal');
  // The code already used is refused; the next step's code raises this session too.
  const { error: replayErr } = await other.auth.mfa.challengeAndVerify({
    factorId: factor.id,
    code: totp(factor.totp.secret, step),
  });
  assert.equal(replayErr.code, 'mfa_verification_failed');
  const { error: cavErr } = await other.auth.mfa.challengeAndVerify({
    factorId: factor.id,
    code: totp(factor.totp.secret, step + 1),
  });
  assert.equal(cavErr, null);
  ({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal2');

  // Admin: the factor is listed, then unenrolled by the user.
  const admin = adminClient();
  const { data: listed, error: listErr } = await admin.auth.admin.mfa.listFactors({ userId });
  assert.equal(listErr, null);
  assert.deepEqual(listed.factors.map((f) => f.id), [factor.id]);

  const { data: un, error: unErr } = await supabase.auth.mfa.unenroll({ factorId: factor.id });
  assert.equal(unErr, null);
  assert.equal(un.id, factor.id);
  await supabase.auth.refreshSession();
  ({ data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal1');
  assert.equal(aal.nextLevel, 'aal1');
});

test('auth.admin.mfa.deleteFactor removes a factor', async () => {
  const supabase = client();
  const { data: up } = await supabase.auth.signUp({ email: email('mfa-admin'), password: PASSWORD });
  const { data: factor } = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'Old phone' });
  const admin = adminClient();
  const { data: deleted, error } = await admin.auth.admin.mfa.deleteFactor({ userId: up.user.id, id: factor.id });
  assert.equal(error, null);
  // auth-js 2.109 wraps the deleted factor once more: { data: { data: factor, error: null } }.
  assert.equal((deleted.data ?? deleted).id, factor.id);
  const { data: listed } = await admin.auth.admin.mfa.listFactors({ userId: up.user.id });
  assert.deepEqual(listed.factors, []);
  const { error: gone } = await admin.auth.admin.mfa.deleteFactor({ userId: up.user.id, id: factor.id });
  assert.equal(gone.status, 404);
  assert.equal(gone.code, 'mfa_factor_not_found');
});
