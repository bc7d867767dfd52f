// supabase-js auth against agencyflow's /auth/v1: sign-up, password and anonymous sign-in,
// user, update, refresh, sign-out, auth events, admin listing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, adminClient, email } from './client.js';

const PASSWORD = 'correct-horse-battery';

test('signUp, signInWithPassword, getUser, refreshSession, signOut with events', async () => {
  const supabase = client();
  const events = [];
  const { data: sub } = supabase.auth.onAuthStateChange((event, session) => {
    events.push([event, session?.user?.id ?? null]);
  });
  const addr = email('js');
  const { data: up, error: upErr } = await supabase.auth.signUp({
    email: addr,
    password: PASSWORD,
    options: { data: { full_name: 'Grace Hopper' } },
  });
  assert.equal(upErr, null);
  assert.ok(up.session, 'autoconfirm: signUp returns a session');
  assert.equal(up.user.email, addr);
  assert.equal(up.user.user_metadata.full_name, 'Grace Hopper');
  const id = up.user.id;

  const { data: me, error: meErr } = await supabase.auth.getUser();
  assert.equal(meErr, null);
  assert.equal(me.user.id, id);

  const { data: inData, error: inErr } = await supabase.auth.signInWithPassword({ email: addr, password: PASSWORD });
  assert.equal(inErr, null);
  assert.equal(inData.user.id, id);
  assert.equal(inData.session.token_type, 'bearer');

  const before = inData.session.refresh_token;
  const { data: ref, error: refErr } = await supabase.auth.refreshSession();
  assert.equal(refErr, null);
  assert.notEqual(ref.session.refresh_token, before);
  assert.equal(ref.user.id, id);

  const { data: upd, error: updErr } = await supabase.auth.updateUser({ data: { plan: 'pro' } });
  assert.equal(updErr, null);
  assert.equal(upd.user.user_metadata.plan, 'pro');
  assert.equal(upd.user.user_metadata.full_name, 'Grace Hopper');

  const { error: outErr } = await supabase.auth.signOut();
  assert.equal(outErr, null);
  const { data: after } = await supabase.auth.getSession();
  assert.equal(after.session, null);
  // The old refresh token no longer works after a global sign-out.
  const { error: gone } = await client().auth.refreshSession({ refresh_token: ref.session.refresh_token });
  assert.ok(gone);
  assert.equal(gone.status, 400);
  assert.equal(gone.code, 'refresh_token_not_found');

  sub.subscription.unsubscribe();
  const names = events.map(([e]) => e);
  for (const e of ['SIGNED_IN', 'TOKEN_REFRESHED', 'USER_UPDATED', 'SIGNED_OUT']) {
    assert.ok(names.includes(e), `event ${e} in ${names.join(',')}`);
  }
  assert.ok(names.indexOf('SIGNED_OUT') > names.indexOf('TOKEN_REFRESHED'));
});

test('errors carry codes', async () => {
  const supabase = client();
  const { data, error } = await supabase.auth.signInWithPassword({ email: email('nobody'), password: 'wrong-password' });
  assert.equal(data.session, null);
  assert.equal(error.status, 400);
  assert.equal(error.code, 'invalid_credentials');
  assert.equal(error.message, 'Invalid login credentials');

  const weak = await supabase.auth.signUp({ email: email('weak'), password: 'short' });
  assert.equal(weak.error.status, 422);
  assert.equal(weak.error.code, 'weak_password');
  assert.deepEqual(weak.error.reasons, ['length']);

  const addr = email('dup');
  await client().auth.signUp({ email: addr, password: PASSWORD });
  const dup = await client().auth.signUp({ email: addr, password: PASSWORD });
  assert.equal(dup.error.code, 'user_already_exists');
});

test('signInAnonymously, then updateUser makes the user permanent', async () => {
  const supabase = client();
  const { data, error } = await supabase.auth.signInAnonymously({ options: { data: { theme: 'dark' } } });
  assert.equal(error, null);
  assert.equal(data.user.is_anonymous, true);
  const id = data.user.id;

  const addr = email('anon');
  const { data: upd, error: updErr } = await supabase.auth.updateUser({ email: addr, password: PASSWORD });
  assert.equal(updErr, null);
  assert.equal(upd.user.id, id);
  assert.equal(upd.user.is_anonymous, false);
  assert.equal(upd.user.email, addr);
  assert.equal(upd.user.user_metadata.theme, 'dark');

  const { data: ref } = await supabase.auth.refreshSession();
  assert.equal(ref.user.is_anonymous, false);
  const payload = JSON.parse(Buffer.from(ref.session.access_token.split('.')[1], 'base64url').toString());
  assert.equal(payload.sub, id);
  assert.equal(payload.is_anonymous, false);

  const { data: again, error: againErr } = await client().auth.signInWithPassword({ email: addr, password: PASSWORD });
  assert.equal(againErr, null);
  assert.equal(again.user.id, id);
});

test('admin.listUsers pages with the Link header', async () => {
  const admin = adminClient();
  for (let i = 0; i < 3; i++) {
    const { error } = await admin.auth.admin.createUser({ email: email('listed'), password: PASSWORD, email_confirm: true });
    assert.equal(error, null);
  }
  const { data, error } = await admin.auth.admin.listUsers({ page: 1, perPage: 2 });
  assert.equal(error, null);
  assert.equal(data.users.length, 2);
  assert.equal(data.nextPage, 2);
  assert.ok(data.lastPage >= 2);
  assert.ok(data.total >= 3);

  const { data: all } = await admin.auth.admin.listUsers();
  assert.ok(all.users.length >= 3);

  const { error: denied } = await client().auth.admin.listUsers();
  assert.equal(denied.status, 403);
  assert.equal(denied.code, 'not_admin');
});

test('admin.generateLink, verifyOtp (code and token_hash), signInWithOtp, resetPasswordForEmail', async () => {
  const admin = adminClient();
  const addr = email('otp');
  const supabase = client();
  assert.equal((await supabase.auth.signUp({ email: addr, password: PASSWORD })).error, null);
  await supabase.auth.signOut();

  // A code from generate_link, entered with the email.
  const { data: link, error: linkErr } = await admin.auth.admin.generateLink({ type: 'magiclink', email: addr });
  assert.equal(linkErr, null);
  assert.equal(link.user.email, addr);
  assert.equal(link.properties.verification_type, 'magiclink');
  assert.match(link.properties.email_otp, /^\d{6}$/);
  const events = [];
  supabase.auth.onAuthStateChange((event) => events.push(event));
  const { data: v, error: vErr } = await supabase.auth.verifyOtp({ email: addr, token: link.properties.email_otp, type: 'email' });
  assert.equal(vErr, null);
  assert.equal(v.user.email, addr);
  assert.ok(v.session.access_token);
  assert.equal((await supabase.auth.getUser()).data.user.id, link.user.id);
  assert.ok(events.includes('SIGNED_IN'), events.join());
  // Used once.
  const { error: reused } = await client().auth.verifyOtp({ email: addr, token: link.properties.email_otp, type: 'email' });
  assert.equal(reused.code, 'otp_expired');
  assert.equal(reused.status, 403);

  // A recovery link's token_hash, then a new password.
  const { data: rec } = await admin.auth.admin.generateLink({ type: 'recovery', email: addr });
  const other = client();
  const { error: recErr } = await other.auth.verifyOtp({ token_hash: rec.properties.hashed_token, type: 'recovery' });
  assert.equal(recErr, null);
  assert.equal((await other.auth.updateUser({ password: 'brand-new-password' })).error, null);
  assert.equal((await client().auth.signInWithPassword({ email: addr, password: 'brand-new-password' })).error, null);

  // Emails that cannot be sent here still answer as Supabase does.
  assert.deepEqual(await client().auth.resetPasswordForEmail(email('nobody')), { data: {}, error: null });
  const { error: noUser } = await client().auth.signInWithOtp({ email: email('nobody'), options: { shouldCreateUser: false } });
  assert.equal(noUser.code, 'otp_disabled');
  const { data: otpData, error: otpErr } = await client().auth.signInWithOtp({ email: email('fresh') });
  assert.equal(otpErr, null);
  assert.equal(otpData.user, null);
});

test('admin.inviteUserByEmail creates the invitee; a confirmed address is refused', async () => {
  const admin = adminClient();
  const addr = email('invitee');
  const { data, error } = await admin.auth.admin.inviteUserByEmail(addr, {
    data: { invited_role: 'member' },
    redirectTo: 'http://localhost:3000/welcome',
  });
  assert.equal(error, null);
  assert.equal(data.user.email, addr);
  assert.ok(data.user.invited_at);
  assert.equal(data.user.email_confirmed_at, undefined);
  assert.equal(data.user.user_metadata.invited_role, 'member');
  // Only the service role may invite.
  const { error: denied } = await client().auth.admin.inviteUserByEmail(email('x'));
  assert.equal(denied.status, 403);
  // Once the address is confirmed, it cannot be invited again.
  const confirmed = email('confirmed');
  assert.equal((await admin.auth.admin.createUser({ email: confirmed, password: PASSWORD, email_confirm: true })).error, null);
  const { error: taken } = await admin.auth.admin.inviteUserByEmail(confirmed);
  assert.equal(taken.code, 'email_exists');
  assert.equal(taken.status, 422);
});

test('reauthenticate sends a code; updateUser with a wrong nonce is refused', async () => {
  const supabase = client();
  const addr = email('reauth');
  assert.equal((await supabase.auth.signUp({ email: addr, password: PASSWORD })).error, null);
  const { data, error } = await supabase.auth.reauthenticate();
  assert.equal(error, null);
  assert.deepEqual(data, { user: null, session: null });
  const { error: bad } = await supabase.auth.updateUser({ password: 'another-password-1', nonce: '000000' });
  assert.equal(bad.code, 'reauthentication_not_valid');
  assert.equal(bad.status, 422);
  // The password is unchanged.
  assert.equal((await client().auth.signInWithPassword({ email: addr, password: PASSWORD })).error, null);
});
