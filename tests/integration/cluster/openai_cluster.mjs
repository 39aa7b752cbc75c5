// The official OpenAI Node SDK against a running moeserve cluster; prints one JSON object that
// test_cluster.py asserts on.   node openai_cluster.mjs BASE_URL MODEL NODE_DIR
import { createRequire } from 'node:module';
import path from 'node:path';

const [baseURL, model, nodeDir] = process.argv.slice(2);
const require = createRequire(path.join(nodeDir, 'package.json'));
const OpenAI = require('openai');
const client = new OpenAI({ baseURL, apiKey: 'sk-local', maxRetries: 0 });
const out = {};

out.models = (await client.models.list()).data.map((m) => m.id);

const chat = await client.chat.completions.create({
  model, messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16, temperature: 0,
});
out.chat = {
  content: chat.choices[0].message.content,
  reasoning_content: chat.choices[0].message.reasoning_content,
  finish_reason: chat.choices[0].finish_reason,
  usage: chat.usage,
};

async function streamed(messages) {
  const s = await client.chat.completions.create({
    model, messages, max_tokens: 16, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  const r = { reasoning: '', content: '', chunks: 0, usage: null };
  for await (const ev of s) {
    r.chunks += 1;
    if (ev.usage) r.usage = ev.usage;
    const d = ev.choices?.[0]?.delta;
    if (d?.reasoning_content) r.reasoning += d.reasoning_content;
    if (d?.content) r.content += d.content;
  }
  return r;
}
const long = [{ role: 'user', content: 'Summarise the following. ' + 'The sky is blue. '.repeat(60) }];
out.first = await streamed(long);
out.second = await streamed(long);

try {
  await client.chat.completions.create({ model, messages: [], max_tokens: 4 });
  out.error = null;
} catch (e) {
  out.error = { name: e.constructor.name, status: e.status, message: e.message };
}
console.log(JSON.stringify(out));
