// supabase-js storage against agencyflow's /storage/v1: upload, list, download, signed URLs,
// move, copy, remove, on the RLS-guarded documents bucket; bucket admin with the service role;
// storage-js's StorageClient with only an Authorization header, listV2, custom metadata;
// resumable uploads with tus-js-client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { StorageClient } from '@supabase/storage-js';
import tus from 'tus-js-client';
import { client, adminClient, url } from './client.js';

const tokenA = process.env.STORAGE_USER_A_TOKEN;
const orgA = process.env.STORAGE_USER_A_ORG;
const tokenB = process.env.STORAGE_USER_B_TOKEN;
const orgB = process.env.STORAGE_USER_B_ORG;
const projectA = process.env.STORAGE_USER_A_PROJECT;
if (!tokenA || !orgA || !tokenB || !orgB || !projectA) {
  throw new Error('STORAGE_USER_* must be set (run through cargo test storage_supabase_js_e2e)');
}

/** A client acting as a signed-in user (the access token as the Authorization header). */
function userClient(token) {
  return client(undefined, { global: { headers: { Authorization: `Bearer ${token}` } } });
}

test('upload, list, download, createSignedUrl, move, copy, remove', async () => {
  const docs = userClient(tokenA).storage.from('documents');
  const path = `${orgA}/briefs/kickoff.txt`;

  const { data: up, error: upErr } = await docs.upload(path, Buffer.from('kick-off notes'), {
    contentType: 'text/plain',
  });
  assert.equal(upErr, null);
  assert.equal(up.path, path);
  assert.equal(up.fullPath, `documents/${path}`);
  assert.ok(up.id);

  // A Blob goes as multipart/form-data.
  const blob = new Blob([JSON.stringify({ a: 1 })], { type: 'application/json' });
  const { error: blobErr } = await docs.upload(`${orgA}/data.json`, blob);
  assert.equal(blobErr, null);

  const { error: dupErr } = await docs.upload(path, Buffer.from('again'), { contentType: 'text/plain' });
  assert.ok(dupErr, 'no upsert: duplicate refused');
  const { error: upsertErr } = await docs.upload(path, Buffer.from('kick-off notes v2'), {
    contentType: 'text/plain',
    upsert: true,
  });
  assert.equal(upsertErr, null);

  const { data: list, error: listErr } = await docs.list(orgA, { sortBy: { column: 'name', order: 'asc' } });
  assert.equal(listErr, null);
  assert.deepEqual(list.map((o) => o.name), ['briefs', 'data.json']);
  const { data: inFolder } = await docs.list(`${orgA}/briefs`);
  assert.equal(inFolder.length, 1);
  assert.equal(inFolder[0].name, 'kickoff.txt');
  assert.equal(inFolder[0].metadata.size, 17);

  const { data: blobOut, error: dlErr } = await docs.download(path);
  assert.equal(dlErr, null);
  assert.equal(await blobOut.text(), 'kick-off notes v2');
  const { data: jsonOut } = await docs.download(`${orgA}/data.json`);
  assert.deepEqual(JSON.parse(await jsonOut.text()), { a: 1 });

  const { data: exists } = await docs.exists(path);
  assert.equal(exists, true);
  const { data: missing } = await docs.exists(`${orgA}/nope.txt`);
  assert.equal(missing, false);
  const { data: info, error: infoErr } = await docs.info(path);
  assert.equal(infoErr, null);
  assert.equal(info.size, 17);
  assert.equal(info.contentType, 'text/plain');

  const { data: signed, error: signErr } = await docs.createSignedUrl(path, 60);
  assert.equal(signErr, null);
  const res = await fetch(signed.signedUrl);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'kick-off notes v2');
  const { data: many } = await docs.createSignedUrls([path, `${orgA}/data.json`], 60);
  assert.equal(many.length, 2);
  assert.ok(many.every((m) => m.signedUrl && m.error === null));

  const { data: upSign, error: upSignErr } = await docs.createSignedUploadUrl(`${orgA}/signed-upload.txt`);
  assert.equal(upSignErr, null);
  const { error: toSignedErr } = await client().storage
    .from('documents')
    .uploadToSignedUrl(`${orgA}/signed-upload.txt`, upSign.token, Buffer.from('signed upload'), {
      contentType: 'text/plain',
    });
  assert.equal(toSignedErr, null);

  const { error: moveErr } = await docs.move(path, `${orgA}/archive/kickoff.txt`);
  assert.equal(moveErr, null);
  const { error: goneErr } = await docs.download(path);
  assert.ok(goneErr, 'moved away');
  const { data: copied, error: copyErr } = await docs.copy(`${orgA}/archive/kickoff.txt`, `${orgA}/kickoff-copy.txt`);
  assert.equal(copyErr, null);
  assert.equal(copied.path, `documents/${orgA}/kickoff-copy.txt`);

  const { data: removed, error: rmErr } = await docs.remove([
    `${orgA}/archive/kickoff.txt`,
    `${orgA}/kickoff-copy.txt`,
    `${orgA}/data.json`,
    `${orgA}/signed-upload.txt`,
  ]);
  assert.equal(rmErr, null);
  assert.equal(removed.length, 4);
  const { data: after } = await docs.list(orgA);
  assert.deepEqual(after, []);
});

test('another org cannot read, list, sign or overwrite', async () => {
  const a = userClient(tokenA).storage.from('documents');
  const b = userClient(tokenB).storage.from('documents');
  const path = `${orgA}/private.txt`;
  assert.equal((await a.upload(path, Buffer.from('mine'), { contentType: 'text/plain' })).error, null);

  const { error: dlErr } = await b.download(path);
  assert.ok(dlErr);
  const { data: listed } = await b.list(orgA);
  assert.deepEqual(listed, []);
  const { error: signErr } = await b.createSignedUrl(path, 60);
  assert.ok(signErr);
  assert.equal(signErr.statusCode, '404');
  const { error: owErr } = await b.upload(path, Buffer.from('theirs'), { contentType: 'text/plain', upsert: true });
  assert.ok(owErr);
  assert.equal(owErr.status, 403);
  const { error: plantErr } = await b.upload(`${orgA}/planted.txt`, Buffer.from('x'), { contentType: 'text/plain' });
  assert.ok(plantErr);

  const { data } = await a.download(path);
  assert.equal(await data.text(), 'mine');
  // Anonymous: nothing.
  const { error: anonErr } = await client().storage.from('documents').download(path);
  assert.ok(anonErr);
  await a.remove([path]);
});

test('buckets with the service role; public URLs', async () => {
  const admin = adminClient().storage;
  const { data: created, error: cErr } = await admin.createBucket('js-public', { public: true, fileSizeLimit: '1MB' });
  assert.equal(cErr, null);
  assert.equal(created.name, 'js-public');
  const { data: bucket } = await admin.getBucket('js-public');
  assert.equal(bucket.public, true);
  // Storage's units are decimal: 1MB is 1,000,000 bytes.
  assert.equal(bucket.file_size_limit, 1000 * 1000);
  assert.match(bucket.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const { data: buckets } = await admin.listBuckets();
  assert.ok(buckets.some((b) => b.id === 'documents'));

  const pub = admin.from('js-public');
  assert.equal((await pub.upload('hello.txt', Buffer.from('public hello'), { contentType: 'text/plain' })).error, null);
  const { data: url } = pub.getPublicUrl('hello.txt');
  const res = await fetch(url.publicUrl);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'public hello');

  const { error: updErr } = await admin.updateBucket('js-public', { public: false });
  assert.equal(updErr, null);
  assert.equal((await fetch(url.publicUrl)).status, 404);
  // The update named only `public`: the size limit stays.
  assert.equal((await admin.getBucket('js-public')).data.file_size_limit, 1000 * 1000);

  const { error: delFull } = await admin.deleteBucket('js-public');
  assert.ok(delFull, 'not empty');
  assert.equal((await admin.emptyBucket('js-public')).error, null);
  assert.equal((await admin.deleteBucket('js-public')).error, null);
});

test('functions.invoke("documents") with FormData: file stored, row created, text extracted', async () => {
  const a = userClient(tokenA);
  const form = new FormData();
  form.append('org_id', orgA);
  form.append('project_id', projectA);
  form.append('category', 'requirements');
  form.append('file', new Blob(['# Requirements\n\nSingle sign-on for **every** client portal.\n'], { type: 'text/markdown' }), 'requirements.md');
  const { data, error } = await a.functions.invoke('documents', { body: form });
  assert.equal(error, null);
  assert.equal(data.document.name, 'requirements.md');
  assert.equal(data.document.category, 'requirements');
  assert.equal(data.document.content_text, 'Requirements\nSingle sign-on for every client portal.');
  assert.equal(data.extraction.format, 'markdown');

  // The row is there through REST, the file through storage.
  const { data: row } = await a.from('documents').select('id, storage_path').eq('id', data.document.id).single();
  assert.equal(row.storage_path, data.storage.path);
  const { data: file } = await a.storage.from('documents').download(row.storage_path);
  assert.match(await file.text(), /Single sign-on/);

  // Org B's member cannot file a document into org A.
  const again = new FormData();
  again.append('org_id', orgA);
  again.append('project_id', projectA);
  again.append('file', new Blob(['x'], { type: 'text/plain' }), 'x.txt');
  const { data: none, error: refused } = await userClient(tokenB).functions.invoke('documents', { body: again });
  assert.equal(none, null);
  assert.equal(refused.name, 'FunctionsHttpError');
  assert.equal(refused.context.status, 403);
  assert.equal((await refused.context.json()).code, 'forbidden');
});

test('StorageClient with only Authorization: upload with metadata, info, listV2 pages, remove', async () => {
  // Server code often builds the storage client alone, with the user's JWT and no apikey.
  const storage = new StorageClient(`${url}/storage/v1`, { Authorization: `Bearer ${tokenA}` });
  const docs = storage.from('documents');
  const folder = `${orgA}/v2`;
  const names = ['a.txt', 'b.txt', 'c.txt', 'd.txt', 'e.txt'];
  for (const n of names) {
    const { error } = await docs.upload(`${folder}/${n}`, Buffer.from(n), { contentType: 'text/plain' });
    assert.equal(error, null);
  }
  // Metadata as a Blob sends it (the multipart `metadata` field) and as a Buffer sends it
  // (the base64 `x-metadata` header), then read back by info().
  const blob = new Blob([JSON.stringify({ ok: true })], { type: 'application/json' });
  const { error: blobErr } = await docs.upload(`${folder}/sub/brief.json`, blob, {
    metadata: { client: 'Acme', stage: 2 },
  });
  assert.equal(blobErr, null);
  const { error: rawErr } = await docs.upload(`${folder}/sub/raw.txt`, Buffer.from('raw'), {
    contentType: 'text/plain',
    metadata: { via: 'header' },
  });
  assert.equal(rawErr, null);
  const { data: info, error: infoErr } = await docs.info(`${folder}/sub/brief.json`);
  assert.equal(infoErr, null);
  assert.deepEqual(info.metadata, { client: 'Acme', stage: 2 });
  assert.equal(info.contentType, 'application/json');
  assert.equal(info.bucketId, 'documents');
  assert.equal(info.name, `${folder}/sub/brief.json`);
  assert.equal(info.size, 11);
  assert.match(info.lastModified, /Z$/);
  assert.equal(info.updatedAt, undefined);
  assert.deepEqual((await docs.info(`${folder}/sub/raw.txt`)).data.metadata, { via: 'header' });
  assert.deepEqual((await docs.info(`${folder}/a.txt`)).data.metadata, {});

  // listV2: folders and objects in one order, two per page, by cursor.
  const seen = { folders: [], objects: [] };
  let cursor;
  let pages = 0;
  do {
    const { data, error } = await docs.listV2({ prefix: `${folder}/`, with_delimiter: true, limit: 2, cursor });
    assert.equal(error, null);
    seen.folders.push(...data.folders.map((f) => f.name));
    seen.objects.push(...data.objects.map((o) => o.name));
    cursor = data.hasNext ? data.nextCursor : undefined;
    if (data.hasNext) assert.equal(data.folders.length + data.objects.length, 2);
    pages += 1;
  } while (cursor && pages < 10);
  assert.equal(pages, 3);
  assert.deepEqual(seen.folders, [`${folder}/sub/`]);
  assert.deepEqual(seen.objects, names.map((n) => `${folder}/${n}`));
  // Flat, newest first: everything under the prefix.
  const { data: flat } = await docs.listV2({ prefix: `${folder}/`, sortBy: { column: 'created_at', order: 'desc' } });
  assert.equal(flat.hasNext, false);
  assert.equal(flat.objects.length, 7);
  assert.equal(flat.objects[0].name, `${folder}/sub/raw.txt`);

  const { data: removed, error: rmErr } = await docs.remove([
    ...names.map((n) => `${folder}/${n}`),
    `${folder}/sub/brief.json`,
    `${folder}/sub/raw.txt`,
  ]);
  assert.equal(rmErr, null);
  assert.equal(removed.length, 7);
});

test('without any credential: Storage\'s error, also for a refused 16 MiB upload', async () => {
  const nobody = new StorageClient(`${url}/storage/v1`, {});
  const { error: listErr } = await nobody.listBuckets();
  assert.equal(listErr.status, 403);
  assert.equal(listErr.message, 'jwt must be provided');
  // A refused upload is answered as a 4xx the client reads, not a reset connection.
  const big = new Blob([new Uint8Array(16 * 1024 * 1024)], { type: 'application/octet-stream' });
  const { data, error } = await nobody.from('documents').upload(`${orgA}/big.bin`, big);
  assert.equal(data, null);
  assert.equal(error.name, 'StorageApiError');
  assert.equal(error.status, 403);
  assert.equal(error.statusCode, '403');
  assert.equal(error.message, 'jwt must be provided');
  const { error: rlsErr } = await new StorageClient(`${url}/storage/v1`, { Authorization: `Bearer ${tokenB}` })
    .from('documents')
    .upload(`${orgA}/big.bin`, big);
  assert.equal(rlsErr.name, 'StorageApiError');
  assert.equal(rlsErr.status, 403);
});

test('vector and analytics buckets: not available, in Storage\'s words', async () => {
  const storage = adminClient().storage;
  const { error: vErr } = await storage.vectors.createBucket('embeddings');
  assert.ok(vErr);
  assert.equal(vErr.status, 403);
  assert.match(vErr.message, /vector buckets are not available/);
  const { error: aErr } = await storage.analytics.listBuckets();
  assert.ok(aErr);
  assert.equal(aErr.status, 403);
  assert.match(aErr.message, /analytics buckets are not available/);
});

test('resumable upload with tus-js-client: 20 MiB interrupted halfway, resumed, bytes identical', async () => {
  const data = randomBytes(20 * 1024 * 1024);
  const objectName = `${orgA}/resumable/big.bin`;
  const headers = { authorization: `Bearer ${tokenA}`, 'x-upsert': 'true' };
  const options = {
    endpoint: `${url}/storage/v1/upload/resumable`,
    headers,
    retryDelays: [],
    uploadDataDuringCreation: false,
    removeFingerprintOnSuccess: true,
    // Supabase's chunk size.
    chunkSize: 6 * 1024 * 1024,
    metadata: {
      bucketName: 'documents',
      objectName,
      contentType: 'application/octet-stream',
      cacheControl: '3600',
      metadata: JSON.stringify({ via: 'tus' }),
    },
  };
  // First attempt: the connection is dropped once more than half has been sent.
  const uploadUrl = await new Promise((resolve, reject) => {
    let aborted = false;
    const upload = new tus.Upload(data, {
      ...options,
      onProgress(sent) {
        if (!aborted && sent > data.length / 2) {
          aborted = true;
          upload.abort().then(() => resolve(upload.url), reject);
        }
      },
      onError: reject,
      onSuccess: () => reject(new Error('finished before it could be interrupted')),
    });
    upload.start();
  });
  assert.match(uploadUrl, /\/storage\/v1\/upload\/resumable\/[A-Za-z0-9_-]+$/);
  const docs = new StorageClient(`${url}/storage/v1`, { Authorization: `Bearer ${tokenA}` }).from('documents');
  // Nothing is visible until the last byte.
  assert.deepEqual((await docs.list(`${orgA}/resumable`)).data, []);
  const head = await fetch(uploadUrl, { method: 'HEAD', headers: { ...headers, 'tus-resumable': '1.0.0' } });
  const kept = Number(head.headers.get('upload-offset'));
  assert.ok(kept > 0 && kept < data.length, `kept ${kept}`);

  // Resumed from the server's offset.
  let resumedFrom = -1;
  await new Promise((resolve, reject) => {
    const upload = new tus.Upload(data, {
      ...options,
      uploadUrl,
      onProgress(sent) {
        if (resumedFrom < 0) resumedFrom = sent;
      },
      onError: reject,
      onSuccess: resolve,
    });
    upload.start();
  });
  assert.ok(resumedFrom >= kept, `resumed from ${resumedFrom}, kept ${kept}`);
  const { data: blob, error } = await docs.download(objectName);
  assert.equal(error, null);
  const back = Buffer.from(await blob.arrayBuffer());
  assert.equal(back.length, data.length);
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
  assert.deepEqual((await docs.info(objectName)).data.metadata, { via: 'tus' });
  assert.equal((await docs.remove([objectName])).error, null);
});
