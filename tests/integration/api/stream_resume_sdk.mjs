// Resumable streams through the official OpenAI Node SDK against a real gateway: a stream cut
// mid-way (the SDK's abort closes the socket) and resumed with Last-Event-ID through the SDK's
// own GET, compared with an uninterrupted run; another key; an explicit cancel; bad inputs.
// Prints one JSON object of observations that test_stream_resume.py checks.
//   node stream_resume_sdk.mjs CONFIG_JSON
// CONFIG: {node_dir, model, url (…/v1), keys: {alice, bob}}
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const require = createRequire(path.join(cfg.node_dir, 'package.json'));
const OpenAI = require('openai');
const { model, keys } = cfg;
const out = {};

// A fetch that keeps the raw SSE bytes the client received (ids included: the SDK's chunks do
// not carry them) while passing everything to the SDK unchanged.
function tappingFetch(log) {
  return async (url, init) => {
    const res = await fetch(url, init);
    log.status = res.status;
    log.stream_id = res.headers.get('x-moeserve-stream-id');
    if (!res.body) return res;
    const decoder = new TextDecoder();
    log.raw = '';
    const tap = new TransformStream({
      transform(chunk, controller) {
        log.raw += decoder.decode(chunk, { stream: true });
        controller.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(tap), {
      status: res.status, statusText: res.statusText, headers: res.headers,
    });
  };
}

// The complete events in raw SSE text: [{id, data}] (a trailing partial event is left out, as
// an SSE parser would).
function events(raw) {
  const blocks = raw.split('\n\n');
  blocks.pop();  // after the last "\n\n": incomplete (or empty)
  const evs = [];
  for (const block of blocks) {
    let id = null;
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = Number(line.slice(4));
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length) evs.push({ id, data: data.join('\n') });
  }
  return evs;
}

// What must be equal between two runs of one request: per choice, the text (content, reasoning
// and completion text) and the finish reason; the usage; the end marker. Chunk boundaries may
// differ between runs (the router may merge tokens), and with n > 1 so may the interleaving.
function summary(evs) {
  const choices = {};
  const rest = [];
  for (const e of evs) {
    if (e.data === '[DONE]') {
      rest.push('[DONE]');
      continue;
    }
    const j = JSON.parse(e.data);
    if (j.usage) rest.push(JSON.stringify(j.usage));
    for (const c of j.choices ?? []) {
      const s = (choices[c.index] ??= { text: '', reasoning: '', finish: null });
      s.text += c.delta?.content ?? c.text ?? '';
      s.reasoning += c.delta?.reasoning_content ?? '';
      if (c.finish_reason) s.finish = c.finish_reason;
    }
  }
  return JSON.stringify({ choices, rest });
}

function client(apiKey, log = {}) {
  return new OpenAI({ baseURL: cfg.url, apiKey: apiKey ?? 'unused', maxRetries: 0,
                      fetch: tappingFetch(log) });
}

async function errorOf(promise) {
  try {
    const v = await promise;
    if (v && typeof v[Symbol.asyncIterator] === 'function') {
      for await (const _ of v) { /* drain */ }
    }
    return null;
  } catch (e) {
    return { name: e.constructor.name, status: e.status ?? null, code: e.code ?? null,
             type: e.type ?? null, message: e.message };
  }
}

async function section(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { sdk_error: `${e.constructor.name}: ${e.message}\n${e.stack}` };
  }
}

function create(c, kind, body) {
  return kind === 'chat' ? c.chat.completions.create(body) : c.completions.create(body);
}

// One uninterrupted run, then the same request cut after `cut` chunks and resumed.
async function cutAndResume(kind, body, cut) {
  const r = {};
  const refLog = {};
  let refChunks = 0;
  for await (const _ of await create(client(keys.alice, refLog), kind, body)) refChunks++;
  const ref = events(refLog.raw);
  r.reference = { events: ref.length, sdk_chunks: refChunks,
                  ids: ref.map((e) => e.id), stream_id: refLog.stream_id };

  const cutLog = {};
  const stream = await create(client(keys.alice, cutLog), kind, body);
  let seen = 0;
  let id = null;
  for await (const chunk of stream) {
    id = chunk.id;
    if (++seen >= cut) break;  // leaving the loop aborts the request: the socket closes
  }
  stream.controller.abort();
  const before = events(cutLog.raw);
  const last = before.length ? before[before.length - 1].id : 0;
  r.cut = { sdk_chunks: seen, events: before.length, last_event_id: last,
            stream_id: cutLog.stream_id, chunk_id: id };

  const route = kind === 'chat' ? '/chat/completions' : '/completions';
  const resLog = {};
  const resumed = await client(keys.alice, resLog).get(`${route}/${id}/stream`, {
    stream: true, headers: { 'Last-Event-ID': String(last) },
  });
  let resumedChunks = 0;
  for await (const _ of resumed) resumedChunks++;
  const after = events(resLog.raw);
  r.resumed = { status: resLog.status, sdk_chunks: resumedChunks, events: after.length,
                ids: after.map((e) => e.id) };
  const joined = before.concat(after);
  r.joined_ids = joined.map((e) => e.id);
  r.joined_equals_reference = summary(joined) === summary(ref);
  r.reference_summary = summary(ref);
  r.ids_one_to_n = joined.every((e, i) => e.id === i + 1) && ref.every((e, i) => e.id === i + 1);
  r.done_last = joined.length > 0 && joined[joined.length - 1].data === '[DONE]';
  // Resuming again from the last event: the stream was delivered to its end, so it is gone.
  r.again = await errorOf(client(keys.alice).get(`${route}/${id}/stream`, {
    stream: true, headers: { 'Last-Event-ID': String(joined.length) },
  }));
  return r;
}

const chat = {
  model, messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 48,
  temperature: 0.8, seed: 11, ignore_eos: true, stream: true,
  stream_options: { include_usage: true },
};
await section('chat', () => cutAndResume('chat', chat, 6));
await section('completions_n2', () => cutAndResume('completions', {
  model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0.9, seed: 5, n: 2,
  ignore_eos: true, stream: true,
}, 5));

// A stream of alice's, left without a reader: bob's key and no key cannot resume it.
await section('keys', async () => {
  const log = {};
  const stream = await client(keys.alice, log).chat.completions.create({
    ...chat, max_tokens: 64 });
  let id = null;
  for await (const chunk of stream) {
    id = chunk.id;
    break;
  }
  stream.controller.abort();
  const path_ = `/chat/completions/${id}/stream`;
  const r = {
    bob: await errorOf(client(keys.bob).get(path_, { stream: true })),
    no_key: await errorOf(new OpenAI({ baseURL: cfg.url, apiKey: 'unused', maxRetries: 0,
                                       defaultHeaders: { Authorization: null } })
                              .get(path_, { stream: true })),
    completions_route: await errorOf(
        client(keys.alice).get(`/completions/${id}/stream`, { stream: true })),
  };
  // Alice still can, from the start (no Last-Event-ID): every event again.
  const own = {};
  let chunks = 0;
  for await (const _ of await client(keys.alice, own).get(path_, { stream: true })) chunks++;
  r.alice_ids = events(own.raw).map((e) => e.id);
  r.alice_chunks = chunks;
  return r;
});

// An explicit cancel ends a stream at once, while its client still reads it.
await section('cancel', async () => {
  const stream = await client(keys.alice).chat.completions.create({
    ...chat, max_tokens: 4000 });
  let chunks = 0;
  let id = null;
  let cancelled = null;
  const err = await errorOf((async () => {
    for await (const chunk of stream) {
      id = chunk.id;
      if (++chunks === 3) {
        cancelled = await client(keys.alice).post(`/chat/completions/${id}/cancel`);
      }
    }
  })());
  return { chunks, cancelled, error: err,
           bob_cancel: await errorOf(client(keys.bob).post(`/chat/completions/${id}/cancel`)) };
});

// Bad inputs to the resume endpoint (raw fetch: the SDK would not send some of them).
await section('bad', async () => {
  const log = {};
  const stream = await client(keys.alice, log).chat.completions.create({ ...chat, max_tokens: 8 });
  let id = null;
  for await (const chunk of stream) id = chunk.id;
  // The stream ran to its end on its own connection: nothing to resume. Cut another one.
  const cutLog = {};
  const s2 = await client(keys.alice, cutLog).chat.completions.create({ ...chat, max_tokens: 400 });
  let id2 = null;
  for await (const chunk of s2) {
    id2 = chunk.id;
    break;
  }
  s2.controller.abort();
  const base = cfg.url;
  const auth = { Authorization: `Bearer ${keys.alice}` };
  async function get(p, headers = {}, method = 'GET') {
    const res = await fetch(base + p, { method, headers: { ...auth, ...headers } });
    const text = await res.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* SSE or empty */ }
    return { status: res.status, error: body?.error ?? null };
  }
  const p = `/chat/completions/${id2}/stream`;
  return {
    delivered: await get(`/chat/completions/${id}/stream`),
    unknown: await get('/chat/completions/chatcmpl-nope-1/stream'),
    odd_id: await get('/chat/completions/%FF%00/stream'),
    letters: await get(p, { 'Last-Event-ID': 'abc' }),
    negative: await get(p, { 'Last-Event-ID': '-1' }),
    huge: await get(p, { 'Last-Event-ID': '99999999999999999999999' }),
    beyond: await get(p, { 'Last-Event-ID': '1000000' }),
    query_bad: await get(`${p}?starting_after=1.5`),
    query_differs: await get(`${p}?starting_after=1`, { 'Last-Event-ID': '2' }),
    post_stream: await get(p, {}, 'POST'),
    get_cancel: await get(`/chat/completions/${id2}/cancel`),
    cancel_unknown: await get('/chat/completions/chatcmpl-nope-1/cancel', {}, 'POST'),
    // Last: resuming with starting_after (the Responses API's name) works too.
    query_ok: await get(`${p}?starting_after=1`),
  };
});

process.stdout.write(JSON.stringify(out));
