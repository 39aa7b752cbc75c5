// Drives a running moeserve gateway with the official OpenAI Node SDK and prints what it saw as
// one JSON object on stdout; the C++ test (gateway_integration_test.cc) asserts on it.
//
//   node openai_client.mjs PORT MODEL NODE_DIR
//
// NODE_DIR is tools/node (where `openai` is installed); ESM resolves packages from the script's
// own folder, so the SDK is loaded through a require rooted there.
import { createRequire } from 'node:module';
import path from 'node:path';

const [port, model, nodeDir] = process.argv.slice(2);
const require = createRequire(path.join(nodeDir, 'package.json'));
const OpenAI = require('openai');

const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-local', maxRetries: 0 });
const out = {};
const messages = [{ role: 'user', content: 'Say hello.' }];

// models.list
const models = await client.models.list();
out.models = models.data.map((m) => m.id);
// models.retrieve, and an unknown id.
const one = await client.models.retrieve(model);
out.retrieved = { id: one.id, object: one.object };
try {
  await client.models.retrieve('no-such-model');
  out.retrieve_unknown = { thrown: false };
} catch (e) {
  out.retrieve_unknown = { thrown: true, is_not_found: e instanceof OpenAI.NotFoundError, code: e.code ?? null };
}

// Non-streaming chat with reasoning_content and usage.
const chat = await client.chat.completions.create({ model, messages, max_tokens: 64 });
out.chat = {
  id: chat.id,
  object: chat.object,
  content: chat.choices[0].message.content,
  reasoning_content: chat.choices[0].message.reasoning_content,
  finish_reason: chat.choices[0].finish_reason,
  usage: chat.usage,
};

// Streaming chat with include_usage.
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 64, stream: true, stream_options: { include_usage: true },
});
const s = { reasoning: '', content: '', finish_reason: null, usage: null, chunks: 0, role: null };
for await (const chunk of stream) {
  s.chunks += 1;
  if (chunk.usage) s.usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.role) s.role = c.delta.role;
    if (c.delta.reasoning_content) s.reasoning += c.delta.reasoning_content;
    if (c.delta.content) s.content += c.delta.content;
    if (c.finish_reason) s.finish_reason = c.finish_reason;
  }
}
out.stream = s;

// Stop string across token boundaries.
const stopped = await client.chat.completions.create({ model, messages, stop: ['moeserve'] });
out.stop = { content: stopped.choices[0].message.content, finish_reason: stopped.choices[0].finish_reason };

// Legacy completions with token ids.
const completion = await client.completions.create({ model, prompt: [0, 100, 200], max_tokens: 8 });
out.completion = { object: completion.object, text: completion.choices[0].text, usage: completion.usage };

// A 400 becomes BadRequestError.
try {
  await client.chat.completions.create({ model, messages, max_tokens: 0 });
  out.bad_request = { thrown: false };
} catch (e) {
  out.bad_request = {
    thrown: true, is_bad_request: e instanceof OpenAI.BadRequestError, status: e.status,
    code: e.code ?? null, param: e.param ?? null, message: e.message,
  };
}
// An unknown model becomes NotFoundError.
try {
  await client.chat.completions.create({ model: 'no-such-model', messages });
  out.not_found = { thrown: false };
} catch (e) {
  out.not_found = { thrown: true, is_not_found: e instanceof OpenAI.NotFoundError, status: e.status };
}

// Disconnect mid-stream: max_tokens 77 makes the fake backend hang after its first chunk.
const controller = new AbortController();
const held = await client.chat.completions.create(
  { model, messages, max_tokens: 77, stream: true }, { signal: controller.signal });
let received = 0;
try {
  for await (const chunk of held) {
    received += chunk.choices.length;
    if (received >= 1) controller.abort();
  }
} catch (e) {
  out.abort_error = e.name;
}
out.disconnect = { received };

process.stdout.write(JSON.stringify(out) + '\n');
