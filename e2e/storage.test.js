// supabase-js storage against agencyflow's /storage/v1: upload, list, download, signed URLs,
// move, copy, remove, on the RLS-guarded documents bucket; bucket admin with the service role.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, adminClient } from './client.js';

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
  assert.equal(bucket.file_size_limit, 1024 * 1024);
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
