// supabase-js with e-mail confirmation, driven in two steps by the Rust test
// `auth_mail_supabase_js_e2e`, which reads the e-mails from its SMTP sink in between:
// MAIL_STEP=signup signs up (no session until confirmed); MAIL_STEP=confirm uses the link's
// token_hash and the code from the e-mails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client } from './client.js';

const PASSWORD = 'correct-horse-battery';
const step = process.env.MAIL_STEP;

async function signUpWaitsForTheConfirmation() {
  for (const addr of [process.env.MAIL_LINK_ADDR, process.env.MAIL_CODE_ADDR]) {
    const supabase = client();
    const { data, error } = await supabase.auth.signUp({
      email: addr,
      password: PASSWORD,
      options: { emailRedirectTo: 'http://app.test/welcome' },
    });
    assert.equal(error, null);
    assert.equal(data.session, null, 'no session before the address is confirmed');
    assert.equal(data.user.email, addr);
    const { error: early } = await supabase.auth.signInWithPassword({ email: addr, password: PASSWORD });
    assert.equal(early.code, 'email_not_confirmed');
  }
}

async function verifyOtpWithWhatTheEmailsCarry() {
  const byLink = client();
  const { data, error } = await byLink.auth.verifyOtp({ token_hash: process.env.MAIL_TOKEN_HASH, type: 'signup' });
  assert.equal(error, null);
  assert.equal(data.user.email, process.env.MAIL_LINK_ADDR);
  assert.ok(data.user.email_confirmed_at);
  assert.ok(data.session.access_token);
  const again = await client().auth.verifyOtp({ token_hash: process.env.MAIL_TOKEN_HASH, type: 'signup' });
  assert.equal(again.error.code, 'otp_expired');

  const byCode = client();
  const { data: d2, error: e2 } = await byCode.auth.verifyOtp({
    email: process.env.MAIL_CODE_ADDR,
    token: process.env.MAIL_CODE,
    type: 'email',
  });
  assert.equal(e2, null);
  assert.equal(d2.user.email, process.env.MAIL_CODE_ADDR);
  const { error: pwErr } = await client().auth.signInWithPassword({ email: process.env.MAIL_CODE_ADDR, password: PASSWORD });
  assert.equal(pwErr, null);
}

const steps = { signup: signUpWaitsForTheConfirmation, confirm: verifyOtpWithWhatTheEmailsCarry };

test(`e-mail confirmation, step ${step}`, async () => {
  assert.ok(steps[step], `MAIL_STEP must be one of ${Object.keys(steps).join(', ')}`);
  await steps[step]();
});
