// The Batch API (/v1/files, /v1/batches) through the official OpenAI Node SDK against a running
// cluster. Prints {"checks": [{"ok", "what"}], ...} for test_batch.py.
//   node batch_sdk.mjs BASE_URL MODEL NODE_DIR main
//   node batch_sdk.mjs BASE_URL MODEL NODE_DIR start-long N      (prints {"batch_id"})
//   node batch_sdk.mjs BASE_URL MODEL NODE_DIR finish-long ID N
import { createRequire } from 'node:module';
import path from 'node:path';

const [baseURL, model, nodeDir, mode, ...rest] = process.argv.slice(2);
const require = createRequire(path.resolve(nodeDir, 'package.json'));
const OpenAI = require('openai');
const { toFile } = require('openai');
const Ajv = require('ajv');
const client = new OpenAI({ baseURL, apiKey: 'sk-local', maxRetries: 0 });
const ajv = new Ajv({ strict: false, allErrors: true });
const checks = [];
const check = (ok, what) => checks.push({ ok: Boolean(ok), what });
const out = { checks };

const jsonl = (lines) => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
const upload = async (lines, name = 'input.jsonl') =>
  client.files.create({ file: await toFile(Buffer.from(jsonl(lines)), name), purpose: 'batch' });

// Polls (bounded by count, not by time) until the batch reaches one of `statuses`.
async function waitFor(id, statuses, polls = 3000) {
  let b;
  for (let i = 0; i < polls; ++i) {
    b = await client.batches.retrieve(id);
    if (statuses.includes(b.status)) return b;
    await new Promise((r) => setTimeout(r, 100));
  }
  return b;
}

async function linesOf(fileId) {
  if (!fileId) return [];
  const text = await (await client.files.content(fileId)).text();
  return text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

async function errorOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return { status: e.status ?? null, message: e.message };
  }
}

const personSchema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 8 },
    age: { type: 'integer' },
  },
  required: ['name', 'age'],
  additionalProperties: false,
};

async function main() {
  // Chat: three requests and one whose body the API refuses (a string temperature).
  const say = (text) => [{ role: 'user', content: text }];
  const chatBodies = {
    'chat-hello': { model, messages: say('Say hello.'), max_tokens: 12, temperature: 0, seed: 7 },
    'chat-count': { model, messages: say('Count to five.'), max_tokens: 10, temperature: 0, seed: 7 },
    'chat-json': {
      model, messages: say('A person as JSON.'), max_tokens: 1500, temperature: 0, seed: 7,
      reasoning_effort: 'low',
      response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: personSchema } },
    },
    'chat-bad': { model, messages: say('x'), temperature: 'hot' },
  };
  const completionBodies = {
    'cmpl-a': { model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0, seed: 7 },
    'cmpl-b': { model, prompt: 'The capital of', max_tokens: 8, temperature: 0, seed: 7 },
  };
  const toLines = (bodies, url) =>
    Object.entries(bodies).map(([custom_id, body]) => ({ custom_id, method: 'POST', url, body }));
  // The direct answers first, alone: a worker's decode batch changes float rounding, so answers
  // are compared between runs that each had the worker to themselves (concurrency 1 below).
  const direct = {};
  for (const [id, body] of Object.entries(chatBodies)) {
    if (id !== 'chat-bad') direct[id] = await client.chat.completions.create(body);
  }
  for (const [id, body] of Object.entries(completionBodies)) {
    direct[id] = await client.completions.create(body);
  }

  const chatFile = await upload(toLines(chatBodies, '/v1/chat/completions'), 'chat.jsonl');
  check(chatFile.object === 'file' && chatFile.purpose === 'batch' && chatFile.bytes > 0,
        `upload: a file object (${JSON.stringify(chatFile)})`);
  const cmplFile = await upload(toLines(completionBodies, '/v1/completions'), 'cmpl.jsonl');
  const chatBatch = await client.batches.create({
    input_file_id: chatFile.id, endpoint: '/v1/chat/completions', completion_window: '24h',
    metadata: { suite: 'batch_api' },
  });
  check(chatBatch.status === 'validating' && chatBatch.metadata.suite === 'batch_api',
        `create: validating with metadata (${chatBatch.status})`);
  const cmplBatch = await client.batches.create({
    input_file_id: cmplFile.id, endpoint: '/v1/completions', completion_window: '24h',
  });

  for (const [batch, bodies] of [[chatBatch, chatBodies], [cmplBatch, completionBodies]]) {
    const done = await waitFor(batch.id, ['completed', 'failed', 'expired', 'cancelled']);
    const total = Object.keys(bodies).length;
    const bad = 'chat-bad' in bodies ? 1 : 0;
    check(done.status === 'completed', `${batch.endpoint}: completed (${done.status})`);
    check(done.request_counts.total === total && done.request_counts.completed === total - bad &&
          done.request_counts.failed === bad,
          `${batch.endpoint}: request_counts ${JSON.stringify(done.request_counts)}`);
    check(done.in_progress_at && done.finalizing_at && done.completed_at,
          `${batch.endpoint}: timestamps set`);
    const outLines = await linesOf(done.output_file_id);
    const errLines = await linesOf(done.error_file_id);
    const ids = [...outLines, ...errLines].map((l) => l.custom_id).sort();
    check(JSON.stringify(ids) === JSON.stringify(Object.keys(bodies).sort()),
          `${batch.endpoint}: every custom_id answered exactly once (${ids})`);
    for (const line of outLines) {
      const want = direct[line.custom_id];
      const body = line.response?.body;
      check(line.response?.status_code === 200 && line.error === null &&
            typeof line.id === 'string' && line.response.request_id === body?.id,
            `${line.custom_id}: output line shape`);
      const got = body?.choices?.[0];
      const text = (c) => (c?.message ? c.message.content : c?.text);
      check(got && text(got) === text(want.choices[0]) &&
            got.finish_reason === want.choices[0].finish_reason &&
            body.usage.completion_tokens === want.usage.completion_tokens,
            `${line.custom_id}: batch answer equals the direct one (${JSON.stringify(text(got))} vs ${JSON.stringify(text(want.choices[0]))})`);
      if (line.custom_id === 'chat-json') {
        let parsed = null;
        try { parsed = JSON.parse(got.message.content); } catch { /* checked below */ }
        const valid = parsed !== null && ajv.validate(personSchema, parsed);
        check(valid, `chat-json: the batch answer matches its schema (ajv: ${JSON.stringify(ajv.errors)})`);
      }
    }
    if (bad) {
      const e = errLines.find((l) => l.custom_id === 'chat-bad');
      check(e && e.response.status_code === 400 && e.response.body.error.message &&
            e.error === null, `chat-bad: a 400 line in the error file (${JSON.stringify(e)})`);
    } else {
      check(done.error_file_id === null, `${batch.endpoint}: no error file`);
    }
  }

  // A file whose lines are wrong: the batch fails, naming the lines.
  const badFile = await client.files.create({
    file: await toFile(Buffer.from(`${JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/completions', body: { model, prompt: 'a' } })}\nnot json\n${JSON.stringify({ custom_id: 'x', method: 'POST', url: '/v1/chat/completions', body: {} })}\n`), 'bad.jsonl'),
    purpose: 'batch',
  });
  const failed = await waitFor((await client.batches.create({
    input_file_id: badFile.id, endpoint: '/v1/chat/completions', completion_window: '24h',
  })).id, ['failed', 'completed']);
  const errs = failed.errors?.data ?? [];
  check(failed.status === 'failed' && errs.some((e) => e.line === 1 && e.code === 'invalid_url') &&
        errs.some((e) => e.line === 2 && e.code === 'invalid_json_line') &&
        errs.some((e) => e.line === 3 && e.code === 'duplicate_custom_id'),
        `invalid input: failed with line errors (${JSON.stringify(failed.errors)})`);

  // Cancel a batch of long requests.
  const longFile = await upload(Array.from({ length: 6 }, (_, i) => ({
    custom_id: `long-${i}`, method: 'POST', url: '/v1/completions',
    body: { model, prompt: `story ${i}`, max_tokens: 200, ignore_eos: true },
  })));
  const longBatch = await client.batches.create({
    input_file_id: longFile.id, endpoint: '/v1/completions', completion_window: '24h',
  });
  const cancelling = await client.batches.cancel(longBatch.id);
  check(['cancelling', 'cancelled'].includes(cancelling.status),
        `cancel: ${cancelling.status}`);
  const cancelled = await waitFor(longBatch.id, ['cancelled', 'completed']);
  check(cancelled.status === 'cancelled' && cancelled.cancelling_at && cancelled.cancelled_at &&
        cancelled.request_counts.completed < 6, `cancelled: ${JSON.stringify(cancelled.request_counts)}`);
  check((await errorOf(client.batches.cancel(chatBatch.id)))?.status === 400,
        'cancel a completed batch: 400');

  // Lists (auto-paging through the SDK's cursor pages), retrieve, delete.
  const listed = [];
  for await (const b of client.batches.list({ limit: 2 })) listed.push(b.id);
  check([chatBatch.id, cmplBatch.id, longBatch.id].every((id) => listed.includes(id)),
        `batches.list pages through every batch (${listed.length})`);
  const files = [];
  for await (const f of client.files.list()) files.push(f.id);
  check(files.includes(chatFile.id) && files.includes(cmplFile.id), 'files.list has the uploads');
  check((await client.files.retrieve(chatFile.id)).filename === 'chat.jsonl', 'files.retrieve');
  const original = await (await client.files.content(chatFile.id)).text();
  check(original === jsonl(toLines(chatBodies, '/v1/chat/completions')), 'files.content round-trips the upload');
  const deleted = await client.files.delete(cmplFile.id);
  check(deleted.deleted === true && deleted.id === cmplFile.id, 'files.delete');
  check((await errorOf(client.files.retrieve(cmplFile.id)))?.status === 404, 'a deleted file is 404');
  check((await errorOf(client.batches.retrieve('batch_nope')))?.status === 404, 'unknown batch 404');

  // Bad uploads and bad creates.
  check((await errorOf(client.files.create({ file: await toFile(Buffer.from('x'), 'a.jsonl'), purpose: 'fine-tune' })))?.status === 400,
        'upload with purpose fine-tune: 400');
  check((await errorOf(client.files.create({ file: await toFile(Buffer.from(''), 'a.jsonl'), purpose: 'batch' })))?.status === 400,
        'empty upload: 400');
  const raw = await fetch(`${baseURL}/files`, {
    method: 'POST', headers: { 'Content-Type': 'multipart/form-data; boundary=abc' },
    body: '--abc\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--abc\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n{}',
  });
  check(raw.status === 400 && (await raw.json()).error.message.includes('boundary'),
        `truncated multipart (no closing boundary): ${raw.status}`);
  const json = await fetch(`${baseURL}/files`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
  });
  check(json.status === 400, `upload as JSON: ${json.status}`);
  check((await errorOf(client.batches.create({ input_file_id: chatFile.id, endpoint: '/v1/embeddings', completion_window: '24h' })))?.status === 400,
        'batch for /v1/embeddings: 400');
  check((await errorOf(client.batches.create({ input_file_id: chatFile.id, endpoint: '/v1/chat/completions', completion_window: '1h' })))?.status === 400,
        'completion_window 1h: 400');
  check((await errorOf(client.batches.create({ input_file_id: 'file-none', endpoint: '/v1/chat/completions', completion_window: '24h' })))?.status === 404,
        'unknown input file: 404');
}

async function startLong(n) {
  const file = await upload(Array.from({ length: n }, (_, i) => ({
    custom_id: `r-${i}`, method: 'POST', url: '/v1/completions',
    body: { model, prompt: `request ${i}`, max_tokens: 64, ignore_eos: true, temperature: 0 },
  })));
  const b = await client.batches.create({
    input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h',
  });
  out.batch_id = b.id;
}

async function finishLong(id, n) {
  const done = await waitFor(id, ['completed', 'failed', 'expired', 'cancelled']);
  out.batch = done;
  check(done.status === 'completed', `after the restart: completed (${done.status})`);
  const lines = [...await linesOf(done.output_file_id), ...await linesOf(done.error_file_id)];
  const ids = lines.map((l) => l.custom_id).sort();
  const want = Array.from({ length: n }, (_, i) => `r-${i}`).sort();
  check(JSON.stringify(ids) === JSON.stringify(want),
        `after the restart: every custom_id answered exactly once (${ids.length} lines)`);
  check(lines.every((l) => l.response?.status_code === 200 &&
                           l.response.body.usage.completion_tokens === 64),
        'after the restart: every answer is a full 200');
  check(done.request_counts.completed === n && done.request_counts.failed === 0,
        `after the restart: request_counts ${JSON.stringify(done.request_counts)}`);
  const listed = [];
  for await (const b of client.batches.list()) listed.push(b.id);
  check(listed.includes(id), 'after the restart: the batch is listed');
}

try {
  if (mode === 'main') await main();
  else if (mode === 'start-long') await startLong(Number(rest[0]));
  else if (mode === 'finish-long') await finishLong(rest[0], Number(rest[1]));
  else throw new Error(`unknown mode ${mode}`);
} catch (e) {
  check(false, `threw: ${e.constructor.name}: ${e.message}`);
}
console.log(JSON.stringify(out));
