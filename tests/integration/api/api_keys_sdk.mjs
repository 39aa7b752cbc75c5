// API keys, quotas, the admin usage endpoint and priorities through the official OpenAI Node
// SDK (and @grpc/grpc-js for the gRPC Inference API) against real gateways with --api-keys.
// Prints one JSON object of observations that test_api_keys.py checks.
//   node api_keys_sdk.mjs CONFIG_JSON
// CONFIG: {node_dir, proto_dir, model, url (gateway A), grpc (A's gRPC address),
//          queued_url (gateway B: one relay slot, keep-alives), router_metrics (B's router),
//          keys: {name: key}}
import { createRequire } from 'node:module';
import path from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const require = createRequire(path.join(cfg.node_dir, 'package.json'));
const OpenAI = require('openai');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const { model, keys } = cfg;
const out = {};
const hello = [{ role: 'user', content: 'Say hello.' }];

// A fetch that records what went out (the Authorization header) and what came back (the raw
// SSE bytes, comments included) while passing everything through to the SDK unchanged.
function recordingFetch(log) {
  return async (url, init) => {
    const headers = new Headers(init?.headers);
    log.authorization = headers.get('authorization');
    const res = await fetch(url, init);
    if (!res.body) return res;
    const decoder = new TextDecoder();
    log.raw = '';
    log.keepalives = 0;
    const tap = new TransformStream({
      transform(chunk, controller) {
        log.raw += decoder.decode(chunk, { stream: true });
        log.keepalives = log.raw.split(': keep-alive\n\n').length - 1;
        controller.enqueue(chunk);
      },
    });
    return new Response(res.body.pipeThrough(tap), {
      status: res.status, statusText: res.statusText, headers: res.headers,
    });
  };
}

function client(baseURL, apiKey, log = {}) {
  const opts = { baseURL, apiKey: apiKey ?? 'unused', maxRetries: 0, fetch: recordingFetch(log) };
  if (apiKey === null) opts.defaultHeaders = { Authorization: null };  // send no key at all
  return new OpenAI(opts);
}

async function errorOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return {
      name: e.constructor.name, status: e.status ?? null, code: e.code ?? null,
      type: e.type ?? null, message: e.message,
      retry_after: e.headers?.get?.('retry-after') ?? null,
    };
  }
}

async function section(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { sdk_error: `${e.constructor.name}: ${e.message}\n${e.stack}` };
  }
}

const small = { model, messages: hello, max_tokens: 4, temperature: 0, ignore_eos: true };
// Usage the clients saw, per key name, to compare with GET /admin/usage.
const seen = {};
function saw(name, usage) {
  (seen[name] ??= []).push({
    prompt: usage.prompt_tokens, completion: usage.completion_tokens,
    cached: usage.prompt_tokens_details?.cached_tokens ?? usage.prompt_cache_hit_tokens ?? 0,
  });
}

// 1. Authentication.
await section('auth', async () => {
  const r = {};
  const noKeyLog = {};
  r.no_key = await errorOf(client(cfg.url, null, noKeyLog).chat.completions.create(small));
  r.no_key_sent_authorization = noKeyLog.authorization;
  r.wrong_key = await errorOf(client(cfg.url, 'sk-wrong').chat.completions.create(small));
  r.models_no_key = await errorOf(client(cfg.url, null).models.list());
  const alice = client(cfg.url, keys.alice);
  r.models = (await alice.models.list()).data.map((m) => m.id);
  // A prompt of several KV blocks, sent twice: the second time it is served from the cache, so
  // the admin endpoint's cost is checked with cache-hit prices too.
  const story = [{ role: 'user', content: 'Tell me a story about a lighthouse keeper, '.repeat(8) }];
  const done = await alice.chat.completions.create({ ...small, messages: story });
  saw('alice', done.usage);
  r.ok_usage = done.usage;
  const s = await alice.chat.completions.create({
    ...small, messages: story, stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const ev of s) if (ev.usage) usage = ev.usage;
  saw('alice', usage);
  r.stream_usage = usage;
  const prices = await fetch(`${cfg.url}/prices`);
  r.prices_status = prices.status;
  r.prices = await prices.json();
  return r;
});

// The gRPC Inference API: metadata `authorization`.
function grpcStub() {
  const def = loader.loadSync('moeserve/v1/inference.proto', {
    includeDirs: [cfg.proto_dir], keepCase: true, longs: Number, defaults: true,
  });
  const { Inference } = grpc.loadPackageDefinition(def).moeserve.v1;
  return new Inference(cfg.grpc, grpc.credentials.createInsecure());
}

function grpcGenerate(stub, key) {
  const md = new grpc.Metadata();
  if (key !== null) md.set('authorization', `Bearer ${key}`);
  return new Promise((resolve) => {
    const call = stub.Generate({
      model, chat: { messages: hello }, max_tokens: 4, ignore_eos: true,
      sampling: { temperature: 0 },
    }, md);
    let usage = null;
    call.on('data', (m) => { if (m.usage) usage = m.usage; });
    call.on('error', (e) => resolve({ code: e.code, details: e.details }));
    call.on('end', () => resolve({ code: 0, usage }));
  });
}

// 2. Quotas: requests per minute, tokens per minute, requests per day.
await section('quotas', async () => {
  const r = {};
  const rpm = client(cfg.url, keys.rpm);
  r.rpm_ok = [];
  for (let i = 0; i < 2; ++i) {
    const done = await rpm.chat.completions.create(small);
    saw('rpm', done.usage);
    r.rpm_ok.push(done.usage.completion_tokens);
  }
  r.rpm_third = await errorOf(rpm.chat.completions.create(small));
  const stub = grpcStub();
  r.rpm_grpc = await grpcGenerate(stub, keys.rpm);  // the same key's quota on the gRPC API
  stub.close();
  const tpm = client(cfg.url, keys.tpm);
  const big = await tpm.chat.completions.create({ ...small, max_tokens: 40 });
  saw('tpm', big.usage);
  r.tpm_first_usage = big.usage;
  r.tpm_second = await errorOf(tpm.chat.completions.create(small));
  const day = client(cfg.url, keys.day);
  const once = await day.chat.completions.create(small);
  saw('day', once.usage);
  r.day_second = await errorOf(day.chat.completions.create(small));
  return r;
});

// 3. The gRPC Inference API.
await section('grpc', async () => {
  const stub = grpcStub();
  const r = {};
  r.no_key = await grpcGenerate(stub, null);
  r.wrong_key = await grpcGenerate(stub, 'sk-wrong');
  r.ok = await grpcGenerate(stub, keys.alice);
  if (r.ok.usage) {
    saw('alice', {
      prompt_tokens: r.ok.usage.prompt_tokens, completion_tokens: r.ok.usage.completion_tokens,
      prompt_cache_hit_tokens: r.ok.usage.prompt_cache_hit_tokens,
    });
  }
  r.list_no_key = await new Promise((resolve) => {
    stub.ListModels({}, (err) => resolve(err ? err.code : 0));
  });
  stub.close();
  return r;
});

// 4. The admin endpoint.
await section('admin', async () => {
  const get = async (key) => {
    const res = await fetch(`${cfg.url.replace(/\/v1$/, '')}/admin/usage`,
      { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    return { status: res.status, body: await res.json() };
  };
  return { no_key: await get(null), not_admin: await get(keys.alice), admin: await get(keys.ops) };
});
out.seen = seen;

// 5. Priorities with one relay slot (gateway B), and keep-alive comments on queued streams.
// The router's queue length from its /metrics; -1 when a scrape fails (polled again: the
// exposer may close a kept-alive connection just as the next scrape reuses it).
async function routerQueued() {
  try {
    const res = await fetch(`http://${cfg.router_metrics}/metrics`);
    const line = (await res.text()).split('\n')
      .find((l) => l.startsWith('moeserve_router_queued_requests'));
    return line ? Number(line.split(' ').pop()) : -1;
  } catch (e) {
    return -1;
  }
}

async function until(what, cond) {
  for (let i = 0; i < 1200; ++i) {  // bounded by a count; nothing is asserted on time
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gave up waiting for ${what}`);
}

await section('priority', async () => {
  const order = [];
  const blockerAbort = new AbortController();
  const blocker = await client(cfg.queued_url, keys.alice).chat.completions.create(
    { ...small, max_tokens: 16000, stream: true }, { signal: blockerAbort.signal });
  const blockerIter = blocker[Symbol.asyncIterator]();
  const blockerFirst = await blockerIter.next();  // the blocker holds the only relay slot now
  const streams = {};
  const start = (name, key, extra) => {
    const log = {};
    const s = { log, text: '', chunks: 0, error: null };
    s.done = (async () => {
      try {
        const st = await client(cfg.queued_url, key, log).chat.completions.create({
          ...small, max_tokens: 3, stream: true, ...extra,
        });
        for await (const ev of st) {
          if (s.chunks++ === 0) order.push(name);
          const d = ev.choices[0]?.delta ?? {};
          s.text += (d.reasoning_content ?? '') + (d.content ?? '');
        }
      } catch (e) {
        s.error = `${e.constructor.name}: ${e.message}`;
      }
    })();
    streams[name] = s;
  };
  // Arrival order: a normal key asking for priority 20 (lower than its tier's 0), the low tier
  // (10), the low tier asking for -5 (held at its tier's 10), the normal tier (0). Start order
  // must be: normal, low, low-asks-high, polite.
  const plan = [
    ['polite', keys.alice, { priority: 20 }], ['low', keys.batch, {}],
    ['low-asks-high', keys.batch, { priority: -5 }], ['normal', keys.alice, {}],
  ];
  for (let i = 0; i < plan.length; ++i) {
    start(...plan[i]);
    await until(`${i + 1} queued`, async () => (await routerQueued()) === i + 1);
  }
  // Every queued stream gets keep-alive comments before its first token.
  await until('keep-alives on every queued stream',
    async () => Object.values(streams).every((s) => s.log.keepalives >= 1 && s.chunks === 0));
  const queuedBeforeRelease = await routerQueued();
  // Closing the connection would leave the stream generating for a resume (the grace
  // period): cancel it explicitly, which frees the slot at once.
  await client(cfg.queued_url, keys.alice).post(
    `/chat/completions/${blockerFirst.value.id}/cancel`);
  blockerAbort.abort();
  await blockerIter.return?.().catch(() => {});
  await Promise.all(Object.values(streams).map((s) => s.done));
  const r = { order, queued_before_release: queuedBeforeRelease, streams: {} };
  for (const [name, s] of Object.entries(streams)) {
    const raw = s.log.raw ?? '';
    r.streams[name] = {
      error: s.error, chunks: s.chunks, text: s.text, keepalives: s.log.keepalives,
      keepalives_before_data: raw.indexOf('data:') > 0
        ? raw.slice(0, raw.indexOf('data:')).split(': keep-alive\n\n').length - 1 : 0,
      done_marker: raw.trimEnd().endsWith('data: [DONE]'),
    };
  }
  return r;
});

console.log(JSON.stringify(out));
