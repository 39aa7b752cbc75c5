// Structured output (response_format) through the official OpenAI Node SDK against a running
// cluster; every answer is parsed with JSON.parse and validated with ajv, a JSON-schema validator
// written independently of ours. Prints {"checks": [{"ok", "what"}]} for test_structured.py.
//   node structured_sdk.mjs BASE_URL MODEL NODE_DIR
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

// Random weights never stop on their own, so every string and array is bounded: then the
// constraint alone must bring each answer to a valid end within max_tokens.
const schemas = {
  person: {
    type: 'object',
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 12 },
      age: { type: 'integer' },
      member: { type: 'boolean' },
      color: { enum: ['red', 'green', 'blue'] },
    },
    required: ['name', 'age', 'member', 'color'],
    additionalProperties: false,
  },
  order: {
    type: 'object',
    properties: {
      items: { type: 'array', items: { $ref: '#/$defs/item' }, minItems: 1, maxItems: 3 },
      note: { anyOf: [{ type: 'string', maxLength: 8 }, { type: 'null' }] },
      total: { type: 'number' },
    },
    required: ['items', 'note'],
    additionalProperties: false,
    $defs: {
      item: {
        type: 'object',
        properties: {
          sku: { const: 'A-1' },
          qty: { type: 'integer' },
          tags: { type: 'array', items: { type: 'string', maxLength: 4 }, maxItems: 2 },
        },
        required: ['sku', 'qty'],
        additionalProperties: false,
      },
    },
  },
  votes: { type: 'array', items: { enum: ['yes', 'no', null, 1.5] }, minItems: 2, maxItems: 4 },
};

const ask = [{ role: 'user', content: 'Answer in JSON.' }];
const format = (name) => ({
  type: 'json_schema', json_schema: { name, strict: true, schema: schemas[name] },
});

function validates(name, text, what) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    check(false, `${what}: JSON.parse failed (${e.message}) on ${JSON.stringify(text.slice(0, 200))}`);
    return;
  }
  const validate = ajv.compile(schemas[name]);
  check(validate(doc), `${what}: ajv accepts ${JSON.stringify(doc).slice(0, 160)} ` +
        `${validate.errors ? JSON.stringify(validate.errors) : ''}`);
}

async function section(name, fn) {
  try {
    await fn();
  } catch (e) {
    check(false, `${name}: ${e.constructor.name}: ${e.message}`);
  }
}

// 1. Sampled answers after free-form reasoning: the thought is not constrained, the answer is.
await section('sampled', async () => {
  for (const name of Object.keys(schemas)) {
    for (const seed of [1, 2]) {
      const r = await client.chat.completions.create({
        model, messages: ask, max_tokens: 1500, temperature: 1.0, seed, reasoning_effort: 'low',
        response_format: format(name),
      });
      const c = r.choices[0];
      const what = `${name} seed ${seed}`;
      check(c.finish_reason === 'stop', `${what}: ends with finish_reason stop (got ${c.finish_reason})`);
      check((c.message.reasoning_content ?? '').length > 0,
            `${what}: the reasoning before the answer is there and free-form`);
      validates(name, c.message.content, what);
    }
  }
});

// 2. Greedy is deterministic, and a stream carries the same answer as the non-streamed call.
await section('stream', async () => {
  const body = {
    model, messages: ask, max_tokens: 1500, temperature: 0, reasoning_effort: 'low',
    response_format: format('order'),
  };
  const a = await client.chat.completions.create(body);
  const b = await client.chat.completions.create(body);
  check(a.choices[0].message.content === b.choices[0].message.content,
        'greedy structured output is the same twice');
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let content = '';
  let reasoning = '';
  let finish = null;
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    content += ch.delta?.content ?? '';
    reasoning += ch.delta?.reasoning_content ?? '';
    finish = ch.finish_reason ?? finish;
  }
  check(finish === 'stop', `stream ends with stop (got ${finish})`);
  check(content === a.choices[0].message.content,
        'the streamed answer equals the non-streamed one');
  check(reasoning === (a.choices[0].message.reasoning_content ?? ''),
        'the streamed reasoning equals the non-streamed one');
  validates('order', content, 'streamed order');
});

// 3. json_object: whatever the sampled path, the answer starts as a JSON object, and a finished
// one parses to an object.
await section('json_object', async () => {
  let finished = 0;
  for (const seed of [1, 2, 3]) {
    const r = await client.chat.completions.create({
      model, messages: ask, max_tokens: 500, temperature: 1.0, seed, reasoning_effort: 'low',
      response_format: { type: 'json_object' },
    });
    const c = r.choices[0];
    const text = c.message.content;
    check(text.trimStart().startsWith('{'), `json_object seed ${seed}: the answer opens an object`);
    if (c.finish_reason === 'stop') {
      finished += 1;
      let doc = null;
      try { doc = JSON.parse(text); } catch { doc = null; }
      check(doc !== null && typeof doc === 'object' && !Array.isArray(doc),
            `json_object seed ${seed}: a finished answer parses to an object`);
    }
  }
  console.error(`json_object: ${finished} of 3 finished within max_tokens`);
});

// 4. What constrained decoding cannot enforce is refused up front, with a message.
await section('errors', async () => {
  const cases = [
    [{ type: 'json_schema', json_schema: { name: 'p', schema: { type: 'string', pattern: '^a' } } },
      'pattern'],
    [{ type: 'json_schema', json_schema: { name: 'p', schema: {
      type: 'object', properties: { n: { type: 'integer', minimum: 0 } } } } }, 'minimum'],
    [{ type: 'json_schema', json_schema: { schema: { type: 'object' } } }, 'name'],
    [{ type: 'json_schema', json_schema: { name: 'p', schema: { $ref: '#/$defs/nope' } } }, 'nope'],
    [{ type: 'xml' }, 'xml'],
    ['json', 'must be an object'],
  ];
  for (const [rf, part] of cases) {
    let error = null;
    try {
      await client.chat.completions.create({ model, messages: ask, max_tokens: 4, response_format: rf });
    } catch (e) {
      error = e;
    }
    check(error && error.status === 400 && error.param === 'response_format' &&
          String(error.message).includes(part),
          `response_format ${JSON.stringify(rf).slice(0, 90)} is a 400 naming '${part}' ` +
          `(got ${error ? `${error.status} ${error.param} ${error.message}` : 'success'})`);
  }
});

console.log(JSON.stringify({ checks }));
