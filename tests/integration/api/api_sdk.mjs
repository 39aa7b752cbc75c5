// The official OpenAI Node SDK against a running moeserve cluster, one section per feature of
// issue 9; prints one JSON object that test_api.py checks (against `moeserve generate` and
// numpy where numbers are involved).   node api_sdk.mjs BASE_URL MODEL NODE_DIR
import { createRequire } from 'node:module';
import path from 'node:path';

const [baseURL, model, nodeDir] = process.argv.slice(2);
const require = createRequire(path.join(nodeDir, 'package.json'));
const OpenAI = require('openai');
const client = new OpenAI({ baseURL, apiKey: 'sk-local', maxRetries: 0 });
const out = {};

const hello = [{ role: 'user', content: 'Say hello.' }];

// The error a request raises, in a comparable form (null when it succeeds).
async function errorOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return {
      name: e.constructor.name, status: e.status ?? null, param: e.param ?? null,
      code: e.code ?? null, message: e.message,
    };
  }
}

async function section(name, fn) {
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { sdk_error: `${e.constructor.name}: ${e.message}` };
  }
}

// 1. Fields of the current chat API.
await section('fields', async () => {
  const r = {};
  const base = { model, max_completion_tokens: 6, temperature: 0, ignore_eos: true };
  const dev = await client.chat.completions.create({
    ...base,
    messages: [{ role: 'developer', content: 'Answer in French.' }, ...hello],
    user: 'user-42', metadata: { team: 'api', run: '1' }, store: false,
    some_future_field: { nested: [1, 2] },
  });
  const sys = await client.chat.completions.create({
    ...base, messages: [{ role: 'system', content: 'Answer in French.' }, ...hello],
  });
  r.developer = { message: dev.choices[0].message, usage: dev.usage };
  r.system = { message: sys.choices[0].message, usage: sys.usage };
  r.equal_max = (await client.chat.completions.create({
    model, messages: hello, max_tokens: 3, max_completion_tokens: 3, ignore_eos: true,
  })).usage;
  const bad = {
    max_completion_tokens_type: { max_completion_tokens: '6' },
    max_tokens_disagree: { max_tokens: 5, max_completion_tokens: 6 },
    user_type: { user: 42 },
    metadata_type: { metadata: { team: 7 } },
    temperature_type: { temperature: 'hot' },
    logprobs_type: { logprobs: 'yes' },
    n_type: { n: '2' },
    stream_options_type: { stream: true, stream_options: { include_usage: 'yes' } },
  };
  r.bad = {};
  for (const [key, extra] of Object.entries(bad)) {
    r.bad[key] = await errorOf(client.chat.completions.create({ model, messages: hello, ...extra }));
  }
  r.bad.developer_content = await errorOf(client.chat.completions.create({
    model, messages: [{ role: 'developer', content: 5 }, ...hello],
  }));
  return r;
});

// 2. Logprobs, chat and completions, streamed and not (greedy, so test_api.py can compare them
// with log-softmax of `moeserve generate --all-logits`).
async function streamChat(params) {
  const s = await client.chat.completions.create({ ...params, stream: true });
  const r = { chunks: [], usage: null };
  for await (const ev of s) {
    if (ev.usage) r.usage = ev.usage;
    for (const c of ev.choices) r.chunks.push(c);
  }
  return r;
}
async function streamCompletion(params) {
  const s = await client.completions.create({ ...params, stream: true });
  const r = { chunks: [] };
  for await (const ev of s) for (const c of ev.choices) r.chunks.push(c);
  return r;
}
await section('logprobs', async () => {
  const chat = { model, messages: hello, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 };
  const r = {};
  const whole = await client.chat.completions.create(chat);
  r.chat = { choice: whole.choices[0], usage: whole.usage };
  r.chat_stream = await streamChat(chat);
  const completion = { model, prompt: 'The quick brown fox', max_tokens: 12, temperature: 0, logprobs: 5 };
  const c = await client.completions.create(completion);
  r.completion = { choice: c.choices[0], usage: c.usage };
  r.completion_stream = await streamCompletion(completion);
  // The thinking budget forces "</think>\n\n": those tokens get logprob 0 and stay aligned.
  const forced = await client.chat.completions.create({
    model, messages: hello, max_tokens: 300, temperature: 0, ignore_eos: true,
    reasoning_effort: 'low', logprobs: true,
  });
  r.forced = {
    logprobs: forced.choices[0].logprobs, usage: forced.usage,
    content: forced.choices[0].message.content,
  };
  return r;
});

// 3. Presence and frequency penalties (greedy; test_api.py replays them in numpy).
await section('penalties', async () => {
  const r = {};
  for (const [presence, frequency] of [[0, 0], [0, -2], [-2, 0], [-2, 2], [2, -2]]) {
    const c = await client.completions.create({
      model, prompt: 'The quick brown fox', max_tokens: 32, temperature: 0, logprobs: 0,
      presence_penalty: presence, frequency_penalty: frequency,
    });
    r[`${presence},${frequency}`] = { logprobs: c.choices[0].logprobs, text: c.choices[0].text };
  }
  return r;
});

// 3b. logit_bias (OpenAI's): test_api.py names the greedy first token to ban (BIAS_BAN) and a
// token to force (BIAS_FORCE), both found in numpy from `moeserve generate`'s logits.
await section('logit_bias', async () => {
  const prompt = 'The quick brown fox';
  const ban = Number(process.env.BIAS_BAN), force = Number(process.env.BIAS_FORCE);
  const banned = await client.completions.create({
    model, prompt, max_tokens: 1, temperature: 0, logprobs: 0, logit_bias: { [ban]: -100 },
  });
  const forced = await client.completions.create({
    model, prompt, max_tokens: 6, temperature: 1, seed: 3, logprobs: 0, ignore_eos: true,
    logit_bias: { [force]: 100 },
  });
  const chat = await client.chat.completions.create({
    model, messages: hello, max_tokens: 4, temperature: 0, logit_bias: { [force]: 100 },
    ignore_eos: true, logprobs: true,
  });
  const bad = {};
  for (const [name, bias] of Object.entries({
    not_an_id: { abc: 1 }, too_large: { 5: 101 }, outside_vocab: { 99999999: 1 },
    not_an_object: [1], not_a_number: { 5: 'high' },
  })) {
    bad[name] = await errorOf(client.completions.create({
      model, prompt, max_tokens: 1, logit_bias: bias,
    }));
  }
  // vLLM's stop_token_ids and min_tokens: the greedy first token as a stop id ends the
  // generation at once; with min_tokens 3 it cannot be sampled for 3 tokens.
  const stopped = await client.completions.create({
    model, prompt, max_tokens: 8, temperature: 0, stop_token_ids: [ban],
  });
  const held = await client.completions.create({
    model, prompt, max_tokens: 8, temperature: 0, logprobs: 0, stop_token_ids: [ban],
    min_tokens: 3,
  });
  bad.min_tokens_over_max = await errorOf(client.completions.create({
    model, prompt, max_tokens: 2, min_tokens: 3,
  }));
  bad.stop_token_outside_vocab = await errorOf(client.completions.create({
    model, prompt, max_tokens: 2, stop_token_ids: [99999999],
  }));
  return {
    stopped: { text: stopped.choices[0].text, finish_reason: stopped.choices[0].finish_reason,
               completion_tokens: stopped.usage.completion_tokens },
    held: { tokens: held.choices[0].logprobs.tokens, completion_tokens: held.usage.completion_tokens },
    banned: banned.choices[0].logprobs.tokens,
    forced: forced.choices[0].logprobs.tokens,
    chat: chat.choices[0].logprobs.content.map((e) => e.token),
    chat_reasoning: (chat.choices[0].logprobs.reasoning_content ?? []).map((e) => e.token),
    bad,
  };
});

// 4. n > 1. KV sharing is read from the KV-cache service's own counters (KvCache.Stats over
// gRPC): the prompt's blocks must be stored once, not once per choice.
async function kvStats() {
  const grpc = require('@grpc/grpc-js');
  const loader = require('@grpc/proto-loader');
  const def = loader.loadSync('moeserve/v1/kvcache.proto', {
    includeDirs: [process.env.PROTO_DIR], keepCase: true, longs: Number, defaults: true,
  });
  const { KvCache } = grpc.loadPackageDefinition(def).moeserve.v1;
  const stub = new KvCache(process.env.KVCACHE_ADDR, grpc.credentials.createInsecure());
  const stats = await new Promise((resolve, reject) => {
    stub.Stats({}, (err, res) => (err ? reject(err) : resolve(res)));
  });
  stub.close();
  return stats;
}
function byIndex(chunks) {
  const per = {};
  for (const c of chunks) {
    const p = (per[c.index] ??= { reasoning: '', content: '', text: '', finish_reason: null, roles: 0 });
    if (c.delta?.role) p.roles += 1;
    if (c.delta?.reasoning_content) p.reasoning += c.delta.reasoning_content;
    if (c.delta?.content) p.content += c.delta.content;
    if (c.text) p.text += c.text;
    if (c.finish_reason) p.finish_reason = c.finish_reason;
  }
  return per;
}
await section('n', async () => {
  const r = {};
  const req = { model, messages: hello, max_tokens: 8, temperature: 1, seed: 7, n: 3, logprobs: true };
  const a = await client.chat.completions.create(req);
  const b = await client.chat.completions.create(req);
  const one = await client.chat.completions.create({ ...req, n: 1 });
  r.chat = { choices: a.choices, usage: a.usage };
  r.chat_again = b.choices.map((c) => c.message);
  r.chat_n1 = one.choices[0].message;
  const s = await streamChat({ ...req, stream_options: { include_usage: true } });
  r.chat_stream = { per: byIndex(s.chunks), usage: s.usage };
  r.greedy = (await client.chat.completions.create({ ...req, temperature: 0, n: 2 })).choices
    .map((c) => c.message);
  const comp = { model, prompt: [5, 17, 300, 2000, 42], max_tokens: 6, temperature: 0.8, seed: 3, n: 2 };
  r.completion = (await client.completions.create(comp)).choices;
  r.completion_stream = byIndex((await streamCompletion(comp)).chunks);
  const before = await kvStats();
  const long = [{ role: 'user', content: `Summarise (${Date.now()}): ` + 'The sky is blue. '.repeat(40) }];
  const shared = await client.chat.completions.create({
    model, messages: long, max_tokens: 2, n: 3, temperature: 1, seed: 1,
  });
  const after = await kvStats();
  r.shared = {
    usage: shared.usage, choices: shared.choices.length,
    published: after.published_blocks - before.published_blocks,
    duplicates: after.duplicate_blocks - before.duplicate_blocks,
    fetched: after.fetched_blocks - before.fetched_blocks, block_tokens: after.block_tokens,
  };
  return r;
});

// 5. DeepSeek beta, through the SDK pointed at /beta: FIM completions and chat prefix
// completion (test_api.py compares them with /v1/completions on the equivalent raw prompt).
await section('beta', async () => {
  const beta = new OpenAI({ baseURL: baseURL.replace(/\/v1$/, '/beta'), apiKey: 'sk-local', maxRetries: 0 });
  const r = {};
  r.models = (await beta.models.list()).data.map((m) => m.id);
  const fim = { model, prompt: 'def add(a, b):\n', suffix: '\n    return c\n', max_tokens: 10, temperature: 0 };
  const f = await beta.completions.create(fim);
  r.fim = { text: f.choices[0].text, usage: f.usage, finish_reason: f.choices[0].finish_reason };
  r.fim_stream = byIndex((await beta.completions.create({ ...fim, stream: true }).then(async (s) => {
    const chunks = [];
    for await (const ev of s) for (const c of ev.choices) chunks.push(c);
    return { chunks };
  })).chunks);
  const prefixed = async (last) => {
    const c = await beta.chat.completions.create({
      model, messages: [...hello, { role: 'assistant', ...last, prefix: true }], max_tokens: 10,
      temperature: 0,
    });
    return { message: c.choices[0].message, usage: c.usage };
  };
  r.prefix_content = await prefixed({ content: '```python\n' });
  r.prefix_reasoning = await prefixed({ content: '', reasoning_content: 'The user greets me, so' });
  r.prefix_both = await prefixed({ content: 'Hello', reasoning_content: 'Greet back.' });
  // The equivalent raw prompts (BOS comes from /v1/completions itself).
  const raw = async (prompt) => {
    const c = await client.completions.create({ model, prompt, max_tokens: 10, temperature: 0 });
    return { text: c.choices[0].text, usage: c.usage };
  };
  const turn = '<｜User｜>Say hello.<｜Assistant｜><think>\n';
  r.raw_content = await raw(`${turn}\n</think>\n\n\`\`\`python\n`);
  r.raw_reasoning = await raw(`${turn}The user greets me, so`);
  r.raw_both = await raw(`${turn}Greet back.\n</think>\n\nHello`);
  r.bad_prefix = await errorOf(beta.chat.completions.create({
    model, messages: [{ role: 'assistant', content: 'x', prefix: true }, ...hello] }));
  r.bad_suffix = await errorOf(beta.completions.create({ model, prompt: [1, 2], suffix: 'x' }));
  return r;
});

// The reasoner rule, on a second gateway started with --reject-logprobs-for-reasoner.
const strictURL = process.env.STRICT_BASE_URL;
if (strictURL) {
  await section('reasoner_rule', async () => {
    const strict = new OpenAI({ baseURL: strictURL, apiKey: 'sk-local', maxRetries: 0 });
    return {
      chat_logprobs: await errorOf(strict.chat.completions.create({
        model, messages: hello, max_tokens: 2, logprobs: true, top_logprobs: 2 })),
      chat_plain: await errorOf(strict.chat.completions.create({ model, messages: hello, max_tokens: 2 })),
      completion_logprobs: await errorOf(strict.completions.create({
        model, prompt: 'Hi', max_tokens: 2, logprobs: 2 })),
    };
  });
}

console.log(JSON.stringify(out));
