// The playground as a person uses it, in headless Chromium (Debian's, driven by playwright-core)
// or Firefox (Debian's firefox-esr, driven by puppeteer-core over WebDriver BiDi; browsers.mjs)
// against a real cluster: reasoning streams into its panel before the answer, the panel
// collapses, usage/timings/cost match what the server sent, history goes back without
// reasoning, Stop cancels on the server, API errors read as plain words, and a phone-width
// screen has no horizontal overflow. Prints "ok"/"FAIL" lines; exits 1 on any failure.
//   node playground.mjs URL ARTIFACT_DIR NODE_DIR MOESERVE ROUTER GATEWAY_METRICS PRICES_JSON [BROWSER]
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './browsers.mjs';

const [url, artifacts, nodeDir, moeserve, router, metricsAddr, pricesJson,
       browserName = 'chromium'] = process.argv.slice(2);
const price = JSON.parse(pricesJson);
fs.mkdirSync(artifacts, { recursive: true });

let failures = 0;
function check(cond, what) {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures += 1;
  return cond;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- what the server says ----

// The healthy workers' loads; null when `moeserve status` failed this time (polled again).
function workers() {
  try {
    return JSON.parse(execFileSync(moeserve, ['status', '--router', router], { encoding: 'utf8' }))
      .workers.filter((w) => w.healthy);
  } catch (e) {
    console.log(`note: moeserve status failed (${e.message.split('\n')[0]}); polling again`);
    return null;
  }
}
const busy = () => { const ws = workers(); return ws !== null && ws.some((w) => w.running > 0); };
const idle = () => {
  const ws = workers();
  return ws !== null && ws.every((w) => w.running === 0 && w.waiting === 0 &&
                                        w.kv_blocks_free === w.kv_blocks_total);
};
async function metric(name) {
  // The sum over the metric's label sets.
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}
// Polls `cond` a bounded number of times (never asserting on elapsed time).
async function until(cond, tries = 600, pauseMs = 100) {
  for (let i = 0; i < tries; i += 1) {
    const v = await cond();
    if (v) return v;
    await sleep(pauseMs);
  }
  return cond();
}

// The usage the server sent on the i-th chat stream (the body is read once the stream ended).
async function usageOf(i) {
  const response = await until(() => chats[i] && chats[i].response, 300);
  return response && response.text ? sseUsage(response.text) : null;
}

function sseUsage(text) {
  let usage = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const ev = JSON.parse(line.slice(6));
    if (ev.usage) usage = ev.usage;
  }
  return usage;
}

// ---- the page ----

process.on('unhandledRejection', (e) => {
  console.log(`FAIL unexpected error: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});

const browser = await launch(browserName, nodeDir);
console.log(`browser: ${browserName} ${await browser.version()}`);
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(e.message));
// Every chat request the page sends, and the stream the server answered with.
const chats = [];
const byRequest = new Map();
page.on('request', (r) => {
  if (!r.url().endsWith('/v1/chat/completions')) return;
  const entry = { body: JSON.parse(r.postData()), headers: r.headers(), response: null };
  chats.push(entry);
  byRequest.set(r, entry);
});
page.on('response', async (r) => {
  const entry = byRequest.get(r.request());
  if (!entry) return;
  try { entry.response = { status: r.status(), text: await r.text() }; } catch (e) {
    entry.response = { status: r.status(), text: null };
  }
});

await page.goto(url + '/');
await page.waitForFunction(() => document.getElementById('model').value !== '', null, { polling: 50 });
check(await page.inputValue('#model') === 'tiny', 'the model picker lists the model from /v1/models');
await until(async () => /per million/.test(await page.textContent('#server-info')), 100);
check((await page.textContent('#server-info')).includes(`output ${price.output_per_million}`),
      `the price table from /v1/prices is shown: ${await page.textContent('#server-info')}`);

// Records, inside the page, the order in which reasoning and answer text grow, and what the
// reply looked like when its reasoning first passed 20 characters (taken in the page, so the
// observation does not race the stream).
await page.evaluate(() => {
  window.growth = [];
  window.early = null;
  new MutationObserver((records) => {
    for (const rec of records) {
      const node = rec.target.nodeType === Node.TEXT_NODE ? rec.target.parentElement : rec.target;
      if (!node || !node.classList) continue;
      if (node.classList.contains('reasoning')) {
        window.growth.push(['reasoning', node.textContent.length]);
        const t = node.closest('.turn');
        if (!window.early && node.textContent.length > 20) {
          window.early = {
            state: t.dataset.state, answer: t.querySelector('.answer').textContent.length,
            panelShown: !t.querySelector('.thinking').hidden,
            stop: !document.getElementById('stop').hidden,
            send: document.getElementById('send').disabled,
          };
        }
      }
      if (node.classList.contains('answer')) window.growth.push(['answer', node.textContent.length]);
    }
  }).observe(document.getElementById('transcript'),
             { subtree: true, characterData: true, childList: true });
});

async function settings({ effort, maxTokens, temperature, system, apiKey }) {
  if (effort !== undefined) await page.selectOption('#effort', effort);
  if (maxTokens !== undefined) await page.fill('#max-tokens', String(maxTokens));
  if (temperature !== undefined) await page.fill('#temperature', String(temperature));
  if (system !== undefined) await page.fill('#system', system);
  if (apiKey !== undefined) await page.fill('#api-key', apiKey);
}
async function sendMessage(text) {
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
}
const lastTurn = () => page.locator('.turn.assistant').last();
async function waitState(states, timeout = 300000) {
  await page.waitForFunction((s) => {
    const t = [...document.querySelectorAll('.turn.assistant')].pop();
    return t && s.includes(t.dataset.state);
  }, states, { timeout, polling: 50 });
}
async function stat(turn, key) {
  return (await turn.locator(`dd[data-stat="${key}"]`).textContent()).trim();
}

// ---- turn 1: reasoning first, then the answer; usage, timings and cost ----

const system = 'You are a careful assistant. ' + 'Think before you answer, and keep it short. '.repeat(6);
await settings({ effort: 'low', maxTokens: 400, temperature: 0, system });
await sendMessage('Why is the sky blue?');
await page.waitForFunction(() => window.early !== null, null, { polling: 50 });
const early = await page.evaluate(() => window.early);
check(early.state === 'thinking' && early.answer === 0 && early.panelShown && early.stop && early.send,
      `while reasoning streams: the thinking panel shows, no answer yet, Stop offered, Send off ` +
      `(${JSON.stringify(early)})`);
await waitState(['done', 'error', 'stopped']);
const t1 = lastTurn();
check(await t1.getAttribute('data-state') === 'done', 'turn 1 finished');
const growth = await page.evaluate(() => window.growth);
const firstAnswer = growth.findIndex(([k, n]) => k === 'answer' && n > 0);
const reasoningSteps = growth.filter(([k], i) => k === 'reasoning' && (firstAnswer < 0 || i < firstAnswer)).length;
const answerSteps = growth.filter(([k]) => k === 'answer').length;
check(firstAnswer > 0 && reasoningSteps > 5,
      `reasoning streamed (${reasoningSteps} updates) before the first answer text (update #${firstAnswer})`);
check(answerSteps > 5, `the answer streamed token by token (${answerSteps} updates)`);

const u1 = await usageOf(0);
check(u1 && u1.completion_tokens_details.reasoning_tokens === 257,
      `low effort bounds the reasoning at its budget: ${JSON.stringify(u1)}`);
const shown = {};
for (const k of ['prompt', 'cached', 'reasoning', 'answer', 'ttft', 'ttfat', 'total', 'cost']) shown[k] = await stat(t1, k);
check(Number(shown.prompt) === u1.prompt_tokens && Number(shown.cached) === u1.prompt_cache_hit_tokens &&
      Number(shown.reasoning) === u1.completion_tokens_details.reasoning_tokens &&
      Number(shown.answer) === u1.completion_tokens - u1.completion_tokens_details.reasoning_tokens,
      `usage on the page matches the stream's usage: ${JSON.stringify(shown)}`);
const secs = (s) => Number(s.replace(' s', ''));
check(secs(shown.ttft) > 0 && secs(shown.ttfat) >= secs(shown.ttft) && secs(shown.total) >= secs(shown.ttfat),
      `time to first token <= time to first answer token <= total: ${shown.ttft} ${shown.ttfat} ${shown.total}`);
const cost = (u1.prompt_cache_hit_tokens * price.input_cache_hit_per_million +
              u1.prompt_cache_miss_tokens * price.input_cache_miss_per_million +
              u1.completion_tokens * price.output_per_million) / 1e6;
check(shown.cost === `USD ${cost.toFixed(6)}`, `cost from the price table: ${shown.cost} (expected USD ${cost.toFixed(6)})`);
const summary = await t1.locator('.thinking summary').textContent();
check(/^Thought for \d+\.\d+ s · 257 reasoning tokens$/.test(summary.trim()), `thinking summary: ${summary}`);

// Collapse and reopen the thinking panel.
await t1.locator('.thinking summary').click();
check(!(await t1.locator('.reasoning').isVisible()) && await t1.locator('.answer').isVisible(),
      'the thinking panel collapses, the answer stays');
await page.screenshot({ path: path.join(artifacts, 'playground-answer-collapsed.png') });
await t1.locator('.thinking summary').click();
check(await t1.locator('.reasoning').isVisible(), 'the thinking panel opens again');
await page.screenshot({ path: path.join(artifacts, 'playground-answer.png'), fullPage: true });

// ---- turn 2: history without reasoning, the API key header, a cached prefix ----

const answer1 = await t1.locator('.answer').textContent();
const reasoning1 = await t1.locator('.reasoning').textContent();
await settings({ maxTokens: 300, apiKey: 'sk-playground-test' });
await sendMessage('And why are sunsets red?');
await waitState(['done', 'error', 'stopped']);
const req2 = chats[1].body;
check(JSON.stringify(req2.messages) === JSON.stringify([
  { role: 'system', content: system.trim() }, { role: 'user', content: 'Why is the sky blue?' },
  { role: 'assistant', content: answer1 }, { role: 'user', content: 'And why are sunsets red?' }]),
      'turn 2 sends the history the way the template expects (answer only, reasoning dropped)');
check(!JSON.stringify(req2).includes(reasoning1.slice(0, 40)), 'no reasoning text goes back to the server');
check(req2.reasoning_effort === 'low' && req2.max_tokens === 300 && req2.temperature === 0 &&
      req2.stream === true && req2.stream_options.include_usage === true,
      `request settings: ${JSON.stringify({ ...req2, messages: undefined })}`);
check(chats[1].headers.authorization === 'Bearer sk-playground-test', 'the API key goes out as a Bearer token');
const u2 = await usageOf(1);
check(u2 && u2.prompt_tokens > u1.prompt_tokens &&
      u2.prompt_cache_hit_tokens > 0 && Number(await stat(lastTurn(), 'cached')) === u2.prompt_cache_hit_tokens,
      `turn 2's longer prompt reuses turn 1's cached prefix, shown on the page: ${JSON.stringify(u2)}`);

// ---- Stop: the request ends on the server ----

const cancelledBefore = await metric('moeserve_gateway_requests_cancelled_total');
await settings({ effort: 'high', maxTokens: 4000, apiKey: '' });
await page.evaluate(() => { window.growth = []; });  // from here on: only the stopped turn
await sendMessage('Tell me a very long story.');
await page.waitForFunction(() => {
  const t = [...document.querySelectorAll('.turn.assistant')].pop();
  return t && t.querySelector('.reasoning').textContent.length > 0;
}, null, { polling: 50 });
const mid = await lastTurn().evaluate((t) => ({
  state: t.dataset.state, summary: t.querySelector('.thinking summary').textContent,
}));
await page.screenshot({ path: path.join(artifacts, 'playground-mid-stream.png') });
check(mid.state === 'thinking' && /^Thinking for \d+\.\d+ s · ~\d+ tokens/.test(mid.summary),
      `mid-stream the panel counts thinking time and tokens live: ${JSON.stringify(mid)}`);
const streams = await metric('moeserve_gateway_open_streams');
check(await until(busy, 100) && streams >= 1,
      `while streaming, the server is working on it (open streams ${streams})`);
// The composer is sticky at the bottom, so Stop stays put on screen, but the page under it scrolls
// with every streamed token: Playwright's click waits for a stable hit target and, on a loaded
// machine, could time out mid-stream (seen in CI). A click event on the button runs the same
// handler a user's click does.
check(await page.isVisible('#stop') && !(await page.isDisabled('#stop')),
      'Stop is shown and enabled while the reply streams');
await page.locator('#stop').dispatchEvent('click');
await waitState(['stopped', 'done', 'error'], 60000);
const stopped = lastTurn();
check(await stopped.getAttribute('data-state') === 'stopped' && await page.isVisible('#send') &&
      !(await page.isDisabled('#send')) && !(await page.isVisible('#stop')),
      'Stop ends the reply on the page and the composer is usable again');
check(await until(idle), 'after Stop every worker is idle and every KV block is free again');
const after = await until(async () => (await metric('moeserve_gateway_requests_cancelled_total')) > cancelledBefore);
check(after, `the gateway counted the cancellation (${cancelledBefore} -> ` +
             `${await metric('moeserve_gateway_requests_cancelled_total')})`);
check(await until(async () => (await metric('moeserve_gateway_open_streams')) === 0),
      'the gateway has no open stream left');
const stoppedReasoning = (await stopped.locator('.reasoning').textContent()).length;
check(stoppedReasoning > 0 && (await stopped.locator('.answer').textContent()) === '',
      `the partial reasoning stays on screen (${stoppedReasoning} chars), no answer`);
// No usage event comes on a stopped stream; the reply shows what arrived (one token per delta,
// i.e. one text update the page's observer saw), marked as received, and no cost.
const received = (await page.evaluate(() => window.growth)).filter(([k]) => k === 'reasoning').length;
const partial = { reasoning: await stat(stopped, 'reasoning'), answer: await stat(stopped, 'answer'),
                  cost: await stopped.locator('dd[data-stat="cost"]').count() };
check(received > 0 && partial.reasoning === `~${received} received` &&
      partial.answer === '~0 received' && partial.cost === 0,
      `the stopped reply shows the tokens received so far (${received} reasoning updates seen): ` +
      JSON.stringify(partial));

check(consoleErrors.length === 0, `no console errors or CSP violations: ${JSON.stringify(consoleErrors)}`);

// ---- an API error, in plain words ----

await settings({ maxTokens: 1000000000 });
await sendMessage('Too many tokens, please.');
await waitState(['error', 'done', 'stopped'], 60000);
const errText = await lastTurn().locator('.error').textContent();
check(/did not accept/.test(errText) && /max_tokens/.test(errText),
      `a 400 from the API reads as plain words with the server's reason: ${errText}`);
check(await lastTurn().evaluate((t) => t.classList.contains('excluded')), 'a failed turn is not part of the history');
await settings({ maxTokens: 300, effort: 'low' });
await sendMessage('Still there?');
await waitState(['done', 'error', 'stopped']);
const req5 = chats[chats.length - 1].body;
check(req5.messages.length === 6 && req5.messages.every((m) => m.content !== 'Too many tokens, please.'),
      `after a stopped turn (no answer) and a failed one, the history has 2 turns + the new message`);

// Chromium logs every 4xx fetch (Firefox does not); the one 400 provoked above is the only error
// allowed.
const logged400 = consoleErrors.filter((e) => /status of 400/.test(e)).length;
check(consoleErrors.length === logged400 && logged400 === (browserName === 'chromium' ? 1 : 0),
      `no other console errors: ${JSON.stringify(consoleErrors)}`);
await context.close();

// ---- phone width ----

const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
const p2 = await phone.newPage();
await p2.goto(url + '/');
await p2.waitForFunction(() => document.getElementById('model').value !== '', null, { polling: 50 });
check(!(await p2.locator('#settings-panel').evaluate((d) => d.open)), 'on a phone the settings start folded');
await p2.locator('#settings-panel summary').tap();
await p2.selectOption('#effort', 'low');
await p2.fill('#max-tokens', '300');
await p2.locator('#settings-panel summary').tap();
await p2.fill('#prompt', 'Hello from a phone');
await p2.locator('#send').tap();
await p2.waitForFunction(() => {
  const t = [...document.querySelectorAll('.turn.assistant')].pop();
  return t && t.dataset.state === 'done';
}, null, { timeout: 300000, polling: 50 });
const overflow = await p2.evaluate(() => {
  const w = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')]
    .filter((e) => e.getBoundingClientRect().right > w + 0.5 && e.getClientRects().length)
    .map((e) => e.tagName + '.' + e.className);
  return { scroll: document.documentElement.scrollWidth, client: w, wide: wide.slice(0, 5) };
});
check(overflow.scroll <= overflow.client && overflow.wide.length === 0,
      `no horizontal overflow at 390 px: ${JSON.stringify(overflow)}`);
await p2.screenshot({ path: path.join(artifacts, 'playground-phone.png'), fullPage: true });
await phone.close();

// ---- a gateway with API keys (KEYED_URL, KEYED_KEY): the 401 in plain words, then the key ----

async function keyedGateway(keyedUrl, key) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const kp = await ctx.newPage();
  const sent = [];  // Authorization of every API request the page made
  kp.on('request', (r) => {
    if (r.url().includes('/v1/')) sent.push([r.url().split('/v1/')[1], r.headers().authorization ?? null]);
  });
  const noticeSays = async (re) => {
    await kp.waitForFunction((src) => new RegExp(src).test(document.getElementById('notice').textContent),
                             re.source, { polling: 50, timeout: 60000 }).catch(() => {});
    return kp.textContent('#notice');
  };
  await kp.goto(keyedUrl + '/');
  let notice = await noticeSays(/needs an API key/);
  check(/needs an API key/.test(notice) && /Settings/.test(notice),
        `keys on, no key: the page says in plain words that a key is needed: ${notice}`);
  await kp.fill('#prompt', 'Hello?');
  await kp.press('#prompt', 'Enter');
  notice = await noticeSays(/No model/);
  check(/No model to talk to yet/.test(notice) && !sent.some(([u]) => u === 'chat/completions'),
        `without a key nothing is sent, and the page says why: ${notice}`);
  await kp.fill('#api-key', 'sk-wrong');
  await kp.locator('#api-key').dispatchEvent('change');
  await until(() => sent.some(([, a]) => a === 'Bearer sk-wrong'), 300, 50);
  notice = await noticeSays(/needs an API key/);
  check(/wrong one/.test(notice), `a wrong key: the 401 reads as plain words again: ${notice}`);
  // The right key (the page reloads the models when the field changes), then a message.
  await kp.fill('#api-key', key);
  await kp.locator('#api-key').dispatchEvent('change');
  await kp.waitForFunction(() => document.getElementById('model').value === 'tiny', null,
                           { polling: 50, timeout: 60000 });
  await kp.fill('#max-tokens', '40');
  await kp.evaluate(() => {
    window.deltas = 0;
    new MutationObserver((records) => {
      for (const rec of records) {
        const n = rec.target.nodeType === Node.TEXT_NODE ? rec.target.parentElement : rec.target;
        if (n?.classList?.contains('reasoning') || n?.classList?.contains('answer')) window.deltas += 1;
      }
    }).observe(document.getElementById('transcript'),
               { subtree: true, characterData: true, childList: true });
  });
  await kp.fill('#prompt', 'Hello?');
  await kp.press('#prompt', 'Enter');
  await kp.waitForFunction(() => {
    const t = [...document.querySelectorAll('.turn.assistant')].pop();
    return t && ['error', 'done', 'stopped'].includes(t.dataset.state);
  }, null, { timeout: 300000, polling: 50 });
  const last = kp.locator('.turn.assistant').last();
  const state = await last.getAttribute('data-state');
  const text = (await last.locator('.reasoning').textContent()) + (await last.locator('.answer').textContent());
  const deltas = await kp.evaluate(() => window.deltas);
  check(state === 'done' && text.length > 0 && deltas > 1,
        `with the key typed in, the reply streams (${deltas} text updates, state ${state})`);
  const chatAuth = sent.filter(([u]) => u === 'chat/completions').map(([, a]) => a);
  check(chatAuth.length === 1 && chatAuth[0] === `Bearer ${key}` && sent[0][1] === null,
        `the page asked with no key first, and sent the chat with 'Bearer <key>'`);
  await kp.screenshot({ path: path.join(artifacts, 'playground-keys.png'), fullPage: true });
  await ctx.close();
}
if (process.env.KEYED_URL) await keyedGateway(process.env.KEYED_URL, process.env.KEYED_KEY);

await browser.close();

console.log(`${failures} failed; screenshots in ${artifacts}`);
process.exit(failures ? 1 : 0);
