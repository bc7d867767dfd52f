// supabase-js WebAuthn MFA against agencyflow's /auth/v1 (server: GOTRUE_WEBAUTHN_RP_ID=localhost,
// GOTRUE_WEBAUTHN_RP_ORIGINS=http://localhost:3000). Node has no authenticator, so one is
// written here: a P-256 key from node:crypto, clientDataJSON, authenticatorData and a `none`
// attestation object built by hand. The first test drives the low-level API
// (mfa.enroll/challenge/verify) and hands supabase-js a PublicKeyCredential-like object, which
// it serialises itself; the second stubs the browser globals (window, document,
// PublicKeyCredential, navigator.credentials) so that mfa.webauthn.register() and
// authenticate() run their full ceremonies unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { client, email } from './client.js';

const PASSWORD = 'correct-horse-battery';
const RP_ID = 'localhost';
const ORIGIN = 'http://localhost:3000';

const sha256 = (b) => createHash('sha256').update(b).digest();
const b64url = (b) => Buffer.from(b).toString('base64url');
const toArrayBuffer = (buf) => buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);

// CBOR (RFC 8949): what an authenticator writes.
function head(major, n) {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 256) return Buffer.from([(major << 5) | 24, n]);
  const b = Buffer.alloc(3);
  b[0] = (major << 5) | 25;
  b.writeUInt16BE(n, 1);
  return b;
}
const cborInt = (i) => (i >= 0 ? head(0, i) : head(1, -1 - i));
const cborBytes = (b) => Buffer.concat([head(2, b.length), Buffer.from(b)]);
const cborText = (s) => Buffer.concat([head(3, Buffer.byteLength(s)), Buffer.from(s)]);

/** Stands in for the browser's PublicKeyCredential (supabase-js checks `instanceof`). */
class FakePublicKeyCredential {
  constructor(id, response) {
    this.id = b64url(id);
    this.rawId = toArrayBuffer(id);
    this.type = 'public-key';
    this.response = response;
    this.authenticatorAttachment = 'cross-platform';
  }
  getClientExtensionResults() {
    return {};
  }
}

/** A software authenticator with one ES256 credential. */
class Authenticator {
  constructor() {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    this.privateKey = privateKey;
    this.jwk = publicKey.export({ format: 'jwk' });
    this.id = Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
    this.count = 0;
    this.origin = ORIGIN;
  }

  authData(flags, attested) {
    const count = Buffer.alloc(4);
    count.writeUInt32BE(this.count);
    const parts = [sha256(RP_ID), Buffer.from([flags]), count];
    if (attested) {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(this.id.length);
      const cose = Buffer.concat([
        head(5, 5),
        cborInt(1), cborInt(2), // kty: EC2
        cborInt(3), cborInt(-7), // alg: ES256
        cborInt(-1), cborInt(1), // crv: P-256
        cborInt(-2), cborBytes(Buffer.from(this.jwk.x, 'base64url')),
        cborInt(-3), cborBytes(Buffer.from(this.jwk.y, 'base64url')),
      ]);
      parts.push(Buffer.alloc(16), len, this.id, cose);
    }
    return Buffer.concat(parts);
  }

  clientData(type, challenge) {
    return Buffer.from(JSON.stringify({ type, challenge: b64url(Buffer.from(challenge)), origin: this.origin, crossOrigin: false }));
  }

  /** navigator.credentials.create({ publicKey }) */
  create({ publicKey }) {
    assert.equal(publicKey.rp.id, RP_ID);
    assert.equal(publicKey.attestation, 'none');
    assert.ok(publicKey.pubKeyCredParams.some((p) => p.alg === -7));
    const authData = this.authData(0x01 | 0x04 | 0x40, true);
    const att = Buffer.concat([
      head(5, 3),
      cborText('fmt'), cborText('none'),
      cborText('attStmt'), head(5, 0),
      cborText('authData'), cborBytes(authData),
    ]);
    return new FakePublicKeyCredential(this.id, {
      clientDataJSON: toArrayBuffer(this.clientData('webauthn.create', publicKey.challenge)),
      attestationObject: toArrayBuffer(att),
      getTransports: () => ['usb'],
    });
  }

  /** navigator.credentials.get({ publicKey }) */
  get({ publicKey }, userHandle) {
    assert.equal(publicKey.rpId, RP_ID);
    assert.deepEqual(
      publicKey.allowCredentials.map((c) => b64url(Buffer.from(c.id))),
      [b64url(this.id)],
    );
    this.count += 1;
    const authData = this.authData(0x01 | 0x04, false);
    const clientData = this.clientData('webauthn.get', publicKey.challenge);
    // WebAuthn signatures are DER-encoded ECDSA over authData || SHA-256(clientDataJSON).
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientData)]), {
      key: this.privateKey,
      dsaEncoding: 'der',
    });
    return new FakePublicKeyCredential(this.id, {
      clientDataJSON: toArrayBuffer(clientData),
      authenticatorData: toArrayBuffer(authData),
      signature: toArrayBuffer(signature),
      userHandle: userHandle ? toArrayBuffer(userHandle) : null,
    });
  }
}

// GoTrue's user handle is the user's id as text.
const uuidBytes = (id) => Buffer.from(id);

test('mfa.enroll, challenge and verify a WebAuthn factor (low-level API)', async () => {
  const supabase = client();
  const addr = email('webauthn');
  const { data: up, error: upErr } = await supabase.auth.signUp({ email: addr, password: PASSWORD });
  assert.equal(upErr, null);

  const { data: factor, error: enrollErr } = await supabase.auth.mfa.enroll({
    factorType: 'webauthn',
    friendlyName: 'Security key',
  });
  assert.equal(enrollErr, null);
  assert.equal(factor.type, 'webauthn');
  assert.equal(factor.friendly_name, 'Security key');

  const webauthn = { rpId: RP_ID, rpOrigins: [ORIGIN] };
  const { data: ch, error: chErr } = await supabase.auth.mfa.challenge({ factorId: factor.id, webauthn });
  assert.equal(chErr, null);
  assert.equal(ch.type, 'webauthn');
  assert.equal(ch.webauthn.type, 'create');
  // supabase-js turned the base64url fields into ArrayBuffers for navigator.credentials.
  const options = ch.webauthn.credential_options.publicKey;
  assert.ok(options.challenge instanceof ArrayBuffer);
  assert.deepEqual(Buffer.from(options.user.id), uuidBytes(up.user.id));

  const key = new Authenticator();
  const { data: session, error: verifyErr } = await supabase.auth.mfa.verify({
    factorId: factor.id,
    challengeId: ch.id,
    webauthn: { ...webauthn, type: 'create', credential_response: key.create({ publicKey: options }) },
  });
  assert.equal(verifyErr, null);
  assert.equal(session.user.factors[0].status, 'verified');

  let { data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.currentLevel, 'aal2');
  assert.equal(aal.currentAuthenticationMethods[0].method, 'mfa/webauthn');
  const { data: factors } = await supabase.auth.mfa.listFactors();
  assert.deepEqual(factors.webauthn.map((f) => f.id), [factor.id]);

  // A new sign-in is aal1 and asks for the second factor; the authenticator proves it.
  const other = client();
  await other.auth.signInWithPassword({ email: addr, password: PASSWORD });
  ({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.deepEqual([aal.currentLevel, aal.nextLevel], ['aal1', 'aal2']);
  const { data: ch2, error: ch2Err } = await other.auth.mfa.challenge({ factorId: factor.id, webauthn });
  assert.equal(ch2Err, null);
  assert.equal(ch2.webauthn.type, 'request');
  const assertion = key.get(ch2.webauthn.credential_options, uuidBytes(up.user.id));
  const { error: v2Err } = await other.auth.mfa.verify({
    factorId: factor.id,
    challengeId: ch2.id,
    webauthn: { ...webauthn, type: 'request', credential_response: assertion },
  });
  assert.equal(v2Err, null);
  ({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel());
  assert.equal(aal.currentLevel, 'aal2');

  // The same response again: the challenge was used.
  const { error: replayErr } = await other.auth.mfa.verify({
    factorId: factor.id,
    challengeId: ch2.id,
    webauthn: { ...webauthn, type: 'request', credential_response: assertion },
  });
  assert.equal(replayErr?.code, 'mfa_factor_not_found');

  const { error: unErr } = await other.auth.mfa.unenroll({ factorId: factor.id });
  assert.equal(unErr, null);
});

test('mfa.webauthn.register and authenticate with navigator.credentials stubbed', async () => {
  const supabase = client();
  const addr = email('webauthn-ceremony');
  const { data: up, error: upErr } = await supabase.auth.signUp({ email: addr, password: PASSWORD });
  assert.equal(upErr, null);
  // Both tabs exist (and finished initialising) before the browser globals appear: a client
  // made in a "browser" would open a BroadcastChannel that keeps node running.
  const other = client();
  await other.auth.getSession();
  const key = new Authenticator();
  // The browser, as far as supabase-js looks at it.
  globalThis.window = globalThis;
  globalThis.document = {};
  globalThis.PublicKeyCredential = FakePublicKeyCredential;
  Object.defineProperty(globalThis, 'navigator', {
    configurable: true,
    value: {
      credentials: {
        create: async (opts) => key.create(opts),
        get: async (opts) => key.get(opts, uuidBytes(up.user.id)),
      },
    },
  });
  try {
    const webauthn = { rpId: RP_ID, rpOrigins: [ORIGIN] };
    const { data: reg, error: regErr } = await supabase.auth.mfa.webauthn.register({
      friendlyName: 'Laptop',
      webauthn,
    });
    assert.equal(regErr, null);
    assert.equal(reg.user.factors[0].factor_type, 'webauthn');
    let { data: aal } = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.equal(aal.currentLevel, 'aal2');

    await other.auth.signInWithPassword({ email: addr, password: PASSWORD });
    const { error: authErr } = await other.auth.mfa.webauthn.authenticate({
      factorId: reg.user.factors[0].id,
      webauthn,
    });
    assert.equal(authErr, null);
    ({ data: aal } = await other.auth.mfa.getAuthenticatorAssuranceLevel());
    assert.equal(aal.currentLevel, 'aal2');
    assert.equal(key.count, 1);
  } finally {
    delete globalThis.window;
    delete globalThis.document;
    delete globalThis.PublicKeyCredential;
  }
});
