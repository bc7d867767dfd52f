// storage-js image transformations against agencyflow's /storage/v1/render/image: a signed
// URL carrying its transformation (createSignedUrl(…, { transform })) fetched as a browser
// would, download(…, { transform }), and getPublicUrl(…, { transform }) on a public bucket.
// The answers are decoded (PNG and WebP headers) and their dimensions checked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { client, adminClient } from './client.js';

const tokenA = process.env.STORAGE_USER_A_TOKEN;
const orgA = process.env.STORAGE_USER_A_ORG;
if (!tokenA || !orgA) {
  throw new Error('STORAGE_USER_A_* must be set (run through cargo test storage_transform)');
}

function userClient(token) {
  return client(undefined, { global: { headers: { Authorization: `Bearer ${token}` } } });
}

/** A width × height RGB PNG (left quarter green, the rest red). */
function png(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      const green = x < width / 4;
      raw[row + 1 + x * 3] = green ? 0 : 255;
      raw[row + 2 + x * 3] = green ? 255 : 0;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** The format and dimensions of a PNG or WebP (VP8, VP8L, VP8X) from its header. */
function dimensions(buf) {
  if (buf.subarray(1, 4).toString('ascii') === 'PNG') {
    return { format: 'png', width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
  }
  assert.equal(buf.subarray(0, 4).toString('ascii'), 'RIFF');
  assert.equal(buf.subarray(8, 12).toString('ascii'), 'WEBP');
  const kind = buf.subarray(12, 16).toString('ascii');
  if (kind === 'VP8 ') {
    return { format: 'webp', width: buf.readUInt16LE(26) & 0x3fff, height: buf.readUInt16LE(28) & 0x3fff };
  }
  if (kind === 'VP8L') {
    const bits = buf.readUInt32LE(21);
    return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1 };
  }
  assert.equal(kind, 'VP8X');
  return { format: 'webp', width: buf.readUIntLE(24, 3) + 1, height: buf.readUIntLE(27, 3) + 1 };
}

test('createSignedUrl with a transform, fetched; download with a transform', async () => {
  const docs = userClient(tokenA).storage.from('documents');
  const path = `${orgA}/images/banner.png`;
  const { error: upErr } = await docs.upload(path, png(400, 200), { contentType: 'image/png' });
  assert.equal(upErr, null);

  const { data: signed, error: signErr } = await docs.createSignedUrl(path, 60, {
    transform: { width: 100, height: 100, resize: 'contain' },
  });
  assert.equal(signErr, null);
  assert.match(signed.signedUrl, /\/storage\/v1\/render\/image\/sign\/documents\//);
  // As a browser fetches an <img src>: no key, WebP accepted.
  const res = await fetch(signed.signedUrl, { headers: { accept: 'image/webp,*/*' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/webp');
  assert.deepEqual(dimensions(Buffer.from(await res.arrayBuffer())), {
    format: 'webp',
    width: 100,
    height: 50,
  });

  const { data: blob, error: dlErr } = await docs.download(path, {
    transform: { width: 50, height: 50, resize: 'fill', quality: 60, format: 'origin' },
  });
  assert.equal(dlErr, null);
  assert.equal(blob.type, 'image/png');
  assert.deepEqual(dimensions(Buffer.from(await blob.arrayBuffer())), {
    format: 'png',
    width: 50,
    height: 50,
  });

  // Out-of-range options come back as storage-js errors with Storage's status.
  const { data: none, error: badErr } = await docs.download(path, { transform: { quality: 5 } });
  assert.equal(none, null);
  assert.equal(badErr.status, 400);
  assert.equal(badErr.message, 'querystring/quality must be >= 20');
});

test('getPublicUrl with a transform on a public bucket', async () => {
  const admin = adminClient().storage;
  const { error: bucketErr } = await admin.createBucket('gallery', { public: true });
  assert.equal(bucketErr, null);
  const { error: upErr } = await admin
    .from('gallery')
    .upload('cover.png', png(300, 300), { contentType: 'image/png' });
  assert.equal(upErr, null);
  const { data } = admin.from('gallery').getPublicUrl('cover.png', { transform: { width: 120 } });
  assert.match(data.publicUrl, /\/storage\/v1\/render\/image\/public\/gallery\/cover\.png\?width=120$/);
  const res = await fetch(data.publicUrl);
  assert.equal(res.status, 200);
  assert.deepEqual(dimensions(Buffer.from(await res.arrayBuffer())), {
    format: 'png',
    width: 120,
    height: 120,
  });
});
