// Tool calling through the official OpenAI Node SDK against a running cluster: forced calls
// (tool_choice "required" and a named function) must name a declared function with arguments
// that ajv (a JSON-schema validator independent of ours) accepts; the stream must carry the same
// calls as the plain response; a conversation with the call and its result goes back through
// the chat template; bad requests get 400s naming the field.
// Prints {"checks": [{"ok", "what"}]} for test_structured.py.
//   node tools_sdk.mjs BASE_URL MODEL NODE_DIR
import { createRequire } from 'node:module';
import path from 'node:path';

const [baseURL, model, nodeDir] = process.argv.slice(2);
const require = createRequire(path.resolve(nodeDir, 'package.json'));
const OpenAI = require('openai');
const Ajv = require('ajv');
const client = new OpenAI({ baseURL, apiKey: 'sk-local', maxRetries: 0 });
const ajv = new Ajv({ strict: false, allErrors: true });
const checks = [];
const check = (ok, what) => checks.push({ ok: Boolean(ok), what });

// Bounded strings and arrays: random weights never stop on their own.
const tools = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: {
        type: 'object',
        properties: {
          city: { type: 'string', minLength: 1, maxLength: 10 },
          unit: { enum: ['celsius', 'fahrenheit'] },
        },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'add',
      parameters: {
        type: 'object',
        properties: { a: { type: 'integer' }, b: { type: 'integer' } },
        required: ['a', 'b'],
        additionalProperties: false,
      },
    },
  },
  { type: 'function', function: { name: 'now', description: 'The time now' } },
];
const validators = Object.fromEntries(tools.map((t) => [
  t.function.name,
  ajv.compile(t.function.parameters ?? { type: 'object', additionalProperties: false }),
]));
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const base = { model, messages, tools, reasoning_effort: 'low', max_tokens: 900 };

// Checks every call; a call cut by max_tokens (finish "length") may be the last one only.
function checkCalls(calls, finish, label, names) {
  check(Array.isArray(calls) && calls.length >= 1, `${label}: at least one call (${calls?.length})`);
  for (const [i, c] of (calls ?? []).entries()) {
    const cut = finish === 'length' && i === calls.length - 1;
    check(/^call_[A-Za-z0-9]{24}$/.test(c.id) && c.type === 'function', `${label}: call ${i} id ${c.id}, type ${c.type}`);
    check(names.includes(c.function.name), `${label}: call ${i} names a declared function (${c.function.name})`);
    if (cut) continue;
    let args;
    try { args = JSON.parse(c.function.arguments); } catch { args = undefined; }
    const validate = validators[c.function.name];
    check(args !== undefined && validate && validate(args),
          `${label}: call ${i} arguments match ${c.function.name}'s schema: ${c.function.arguments} ${JSON.stringify(validate?.errors ?? null)}`);
  }
}

// Forced calls, plain responses.
const plain = {};
for (const seed of [1, 2]) {
  const r = await client.chat.completions.create({ ...base, tool_choice: 'required', parallel_tool_calls: false, seed });
  const ch = r.choices[0];
  check(ch.finish_reason === 'tool_calls', `required, seed ${seed}: finish_reason ${ch.finish_reason}`);
  check(ch.message.tool_calls?.length === 1, `required without parallel calls: one call (${ch.message.tool_calls?.length})`);
  check(typeof ch.message.reasoning_content === 'string' && ch.message.reasoning_content.length > 0,
        `required, seed ${seed}: the model reasoned first (${ch.message.reasoning_content?.length} chars)`);
  check(ch.message.content === null || ch.message.content === '', `required, seed ${seed}: no answer text (${JSON.stringify(ch.message.content)})`);
  checkCalls(ch.message.tool_calls, ch.finish_reason, `required, seed ${seed}`, tools.map((t) => t.function.name));
  plain[seed] = ch.message.tool_calls;
}
{
  const r = await client.chat.completions.create({ ...base, tool_choice: 'required', parallel_tool_calls: true, seed: 3 });
  const ch = r.choices[0];
  check(['tool_calls', 'length'].includes(ch.finish_reason), `required with parallel calls: finish_reason ${ch.finish_reason}`);
  checkCalls(ch.message.tool_calls, ch.finish_reason, 'required, parallel', tools.map((t) => t.function.name));
}
for (const name of ['add', 'now']) {
  const r = await client.chat.completions.create({
    ...base, tool_choice: { type: 'function', function: { name } }, seed: 4,
  });
  const ch = r.choices[0];
  check(ch.finish_reason === 'tool_calls' && ch.message.tool_calls?.length === 1 &&
        ch.message.tool_calls[0].function.name === name,
        `named '${name}': exactly one call of it (${JSON.stringify(ch.message.tool_calls)})`);
  checkCalls(ch.message.tool_calls, ch.finish_reason, `named '${name}'`, [name]);
  if (name === 'now') {
    let args;
    try { args = JSON.parse(ch.message.tool_calls?.[0]?.function.arguments); } catch { args = null; }
    check(args !== null && typeof args === 'object' && Object.keys(args).length === 0,
          `'now' takes no parameters: ${JSON.stringify(ch.message.tool_calls?.[0]?.function.arguments)}`);
  }
}

// The stream carries the same calls as the plain response (greedy, so both draw the same): the
// first delta of a call has id, type and name, the others add arguments.
{
  const greedy = { ...base, tool_choice: 'required', parallel_tool_calls: false, temperature: 0 };
  const once = (await client.chat.completions.create(greedy)).choices[0].message.tool_calls;
  const stream = await client.chat.completions.create({ ...greedy, stream: true });
  const calls = [];
  let finish = null, bad = 0, argDeltas = 0;
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    if (ch.finish_reason) finish = ch.finish_reason;
    for (const d of ch.delta?.tool_calls ?? []) {
      if (d.id) {
        if (d.index !== calls.length || d.type !== 'function' || !d.function?.name) bad += 1;
        calls.push({ id: d.id, type: d.type, function: { name: d.function.name, arguments: d.function.arguments ?? '' } });
      } else if (calls[d.index]) {
        calls[d.index].function.arguments += d.function?.arguments ?? '';
        argDeltas += 1;
      } else {
        bad += 1;
      }
    }
  }
  check(finish === 'tool_calls', `stream: finish_reason ${finish}`);
  check(bad === 0, `stream: every call opens with index, id, type and name (${bad} malformed deltas)`);
  check(argDeltas > 1, `stream: the arguments arrive in pieces (${argDeltas} deltas)`);
  const shape = (list) => JSON.stringify(list.map((c) => [c.function.name, c.function.arguments]));
  const streamed = shape(calls);
  const whole = shape(once);
  check(streamed === whole, `stream and plain response carry the same call: ${streamed} vs ${whole}`);
}

// The call and its result go back; the reasoning behind a call of this turn goes back too.
{
  const first = await client.chat.completions.create({ ...base, tool_choice: 'required', parallel_tool_calls: false, seed: 2 });
  const m = first.choices[0].message;
  const history = [
    ...messages,
    { role: 'assistant', content: null, reasoning_content: m.reasoning_content, tool_calls: m.tool_calls },
    { role: 'tool', tool_call_id: m.tool_calls[0].id, content: '{"temperature": 21, "sky": "clear"}' },
  ];
  const r = await client.chat.completions.create({ model, messages: history, tools, max_tokens: 40, seed: 5 });
  const ch = r.choices[0];
  check(r.usage.prompt_tokens > first.usage.prompt_tokens,
        `a turn with the call and its result is accepted and longer (${r.usage.prompt_tokens} > ${first.usage.prompt_tokens} prompt tokens)`);
  check(['stop', 'length', 'tool_calls'].includes(ch.finish_reason), `after the result: finish_reason ${ch.finish_reason}`);
  try {
    await client.chat.completions.create({
      model, tools, max_tokens: 8,
      messages: [...messages, { role: 'assistant', content: null, tool_calls: m.tool_calls }, history[2]],
    });
    check(false, 'a call of this turn without its reasoning_content is refused');
  } catch (e) {
    check(e.status === 400 && e.param === 'messages[1].reasoning_content',
          `a call of this turn without its reasoning_content: ${e.status} ${e.param}: ${e.message}`);
  }
}

// Auto: the model may answer or call; either way the response is well formed.
{
  const r = await client.chat.completions.create({ ...base, max_tokens: 40, seed: 6 });
  const ch = r.choices[0];
  check(['stop', 'length', 'tool_calls'].includes(ch.finish_reason) &&
        (typeof ch.message.content === 'string' || ch.message.tool_calls?.length > 0),
        `auto: a well-formed answer (finish ${ch.finish_reason})`);
}

// Bad requests.
const bad = [
  [{ model, messages, tool_choice: 'required', max_tokens: 8 }, 'tool_choice'],
  [{ ...base, tool_choice: { type: 'function', function: { name: 'missing' } } }, 'tool_choice'],
  [{ ...base, tools: [{ type: 'function', function: { name: 'bad name' } }] }, 'tools[0].function.name'],
  [{ ...base, tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { s: { type: 'string', pattern: 'a+' } } } } }], tool_choice: 'required' }, 'tools[0].function.parameters'],
  [{ model, max_tokens: 8, messages: [...messages, { role: 'tool', tool_call_id: 'call_x', content: '1' }] }, 'messages[1].tool_call_id'],
];
for (const [body, param] of bad) {
  try {
    await client.chat.completions.create(body);
    check(false, `refused: ${param}`);
  } catch (e) {
    check(e.status === 400 && e.param === param, `400 naming '${param}': got ${e.status} ${e.param}: ${e.message}`);
  }
}

console.log(JSON.stringify({ checks }));
