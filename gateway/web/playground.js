// The moeserve playground: a chat page served by the gateway itself. It speaks the gateway's
// OpenAI-compatible API from the same origin (GET /v1/models, GET /v1/prices, streaming POST
// /v1/chat/completions) and shows the reasoning (`reasoning_content` deltas) in its own panel
// before the answer. Plain DOM code with no dependencies; text is only ever set as text.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $('model'), system: $('system'), effort: $('effort'), temperature: $('temperature'),
    maxTokens: $('max-tokens'), apiKey: $('api-key'), serverInfo: $('server-info'),
    settingsPanel: $('settings-panel'), transcript: $('transcript'), emptyHint: $('empty-hint'),
    notice: $('notice'), composer: $('composer'), prompt: $('prompt'), send: $('send'),
    stop: $('stop'), newChat: $('new-chat'),
  };

  // Earlier turns as the chat template expects them: user text and the assistant's answer only
  // (R1's template drops reasoning from history, so it is never sent back).
  let history = [];
  let prices = null;  // model id -> price row of GET /v1/prices, or null when there is none
  let models = [];    // rows of GET /v1/models
  let current = null; // the reply being streamed: {controller, ...}

  // ---- settings kept across reloads (the API key only for this tab) ----

  const kSaved = ['system', 'effort', 'temperature', 'maxTokens'];
  function loadSettings() {
    try {
      const saved = JSON.parse(localStorage.getItem('moeserve.playground') || '{}');
      for (const k of kSaved) if (typeof saved[k] === 'string') ui[k].value = saved[k];
      ui.apiKey.value = sessionStorage.getItem('moeserve.apiKey') || '';
    } catch (e) { /* storage disabled: defaults */ }
  }
  function saveSettings() {
    try {
      const out = {};
      for (const k of kSaved) out[k] = ui[k].value;
      localStorage.setItem('moeserve.playground', JSON.stringify(out));
      sessionStorage.setItem('moeserve.apiKey', ui.apiKey.value);
    } catch (e) { /* storage disabled */ }
  }

  function headers(extra) {
    const h = Object.assign({}, extra);
    const key = ui.apiKey.value.trim();
    if (key) h.Authorization = 'Bearer ' + key;
    return h;
  }

  // ---- errors in plain words ----

  async function errorFromResponse(res) {
    let message = '';
    try {
      const body = await res.json();
      message = (body && body.error && body.error.message) || '';
    } catch (e) { /* not JSON */ }
    return describeError(res.status, message);
  }

  function describeError(status, message) {
    const detail = message ? ` The gateway said: “${message}”` : '';
    switch (true) {
      case status === 400: return 'The gateway did not accept this request.' + detail;
      case status === 401: return 'This gateway needs an API key, and none (or a wrong one) was ' +
          'sent. Enter your key under Settings.' + detail;
      case status === 403: return 'This API key is not allowed to do that.' + detail;
      case status === 404: return 'Not found: the model or the page does not exist on this ' +
          'gateway.' + detail;
      case status === 413: return 'The conversation is too large to send. Start a new chat.' +
          detail;
      case status === 429: return 'Too many requests or a limit was reached. Wait a moment and ' +
          'try again.' + detail;
      case status === 503: return 'The model servers are not available right now. Try again ' +
          'shortly.' + detail;
      case status === 504: return 'The model servers took too long to answer.' + detail;
      case status >= 500: return `The server failed while answering (HTTP ${status}).` + detail;
      default: return `The request failed (HTTP ${status}).` + detail;
    }
  }

  function networkError() {
    return `Could not reach the gateway at ${location.origin}. Is it still running?`;
  }

  function showNotice(text) {
    ui.notice.textContent = text || '';
    ui.notice.hidden = !text;
  }

  // ---- models and prices ----

  async function loadModels() {
    let res;
    try {
      res = await fetch('v1/models', { headers: headers() });
    } catch (e) {
      showNotice(networkError());
      return;
    }
    if (!res.ok) {
      showNotice('Could not list the models. ' + await errorFromResponse(res));
      return;
    }
    const body = await res.json();
    models = Array.isArray(body.data) ? body.data : [];
    const previous = ui.model.value;
    ui.model.replaceChildren();
    for (const m of models) {
      const opt = document.createElement('option');
      opt.value = opt.textContent = String(m.id);
      ui.model.append(opt);
    }
    if (models.some((m) => String(m.id) === previous)) ui.model.value = previous;
    showNotice(models.length ? '' : 'The gateway serves no model.');
    describeModel();
  }

  async function loadPrices() {
    try {
      const res = await fetch('v1/prices', { headers: headers() });
      if (!res.ok) { prices = null; return; }
      const body = await res.json();
      prices = {};
      for (const row of (Array.isArray(body.data) ? body.data : [])) prices[row.model] = row;
      prices.currency = body.currency || 'USD';
    } catch (e) {
      prices = null;
    }
    describeModel();
  }

  function describeModel() {
    const m = models.find((x) => String(x.id) === ui.model.value);
    const parts = [];
    if (m && m.context_length) parts.push(`context ${m.context_length} tokens`);
    const p = prices && prices[ui.model.value];
    if (p) {
      parts.push(`${prices.currency} per million tokens: input ${p.input_cache_miss_per_million}` +
                 ` (cached ${p.input_cache_hit_per_million}), output ${p.output_per_million}`);
    } else {
      parts.push('no price table on this gateway');
    }
    ui.serverInfo.textContent = parts.join(' · ');
    if (m && m.context_length) ui.maxTokens.max = String(m.context_length);
  }

  // ---- the transcript ----

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function scrollToEnd(force) {
    const doc = document.scrollingElement || document.documentElement;
    const nearEnd = doc.scrollHeight - doc.scrollTop - doc.clientHeight < 120;
    if (force || nearEnd) doc.scrollTop = doc.scrollHeight;
  }

  function addUserTurn(text) {
    ui.emptyHint.hidden = true;
    const turn = el('article', 'turn user');
    turn.append(el('div', 'who', 'You'), el('div', 'text', text));
    ui.transcript.append(turn);
    return turn;
  }

  function addAssistantTurn(model) {
    const turn = el('article', 'turn assistant');
    turn.dataset.state = 'waiting';
    const thinking = el('details', 'thinking');
    thinking.open = true;
    const summary = el('summary');
    const label = el('span', 'think-label', 'Thinking');
    const time = el('span', 'think-time', '');
    const tokens = el('span', 'think-tokens', '');
    summary.append(label, ' ', time, ' ', tokens);
    const reasoning = el('div', 'reasoning');
    reasoning.append(document.createTextNode(''));
    thinking.append(summary, reasoning);
    thinking.hidden = true;  // until the first reasoning token
    const answer = el('div', 'answer');
    answer.append(document.createTextNode(''));
    const stats = el('dl', 'stats');
    turn.append(el('div', 'who', model), thinking, answer, stats);
    ui.transcript.append(turn);
    return { turn, thinking, label, time, tokens, reasoning, answer, stats };
  }

  function seconds(ms) {
    return ms === null || ms === undefined ? '–' : (ms / 1000).toFixed(2) + ' s';
  }

  function updateThinking(r, now) {
    if (r.firstReasoning === null) return;
    const end = r.firstAnswer !== null ? r.firstAnswer : (r.end !== null ? r.end : now);
    const count = r.usage ? r.usage.completion_tokens_details?.reasoning_tokens : null;
    r.view.label.textContent = r.end === null && r.firstAnswer === null ? 'Thinking' : 'Thought';
    r.view.time.textContent = 'for ' + seconds(end - r.firstReasoning);
    r.view.tokens.textContent = count !== null && count !== undefined
        ? `· ${count} reasoning tokens` : `· ~${r.reasoningChunks} tokens`;
  }

  function addStat(r, name, value, key) {
    const row = el('div');
    const dt = el('dt', '', name);
    const dd = el('dd', '', value);
    dd.dataset.stat = key;
    row.append(dt, dd);
    r.view.stats.append(row);
  }

  function costOf(usage, model) {
    const p = prices && prices[model];
    if (!p || !usage) return null;
    const hit = usage.prompt_cache_hit_tokens ?? usage.prompt_tokens_details?.cached_tokens ?? 0;
    const miss = usage.prompt_cache_miss_tokens ?? (usage.prompt_tokens - hit);
    return (hit * p.input_cache_hit_per_million + miss * p.input_cache_miss_per_million +
            usage.completion_tokens * p.output_per_million) / 1e6;
  }

  function showStats(r) {
    r.view.stats.replaceChildren();
    const u = r.usage;
    if (u) {
      const reasoningTokens = u.completion_tokens_details?.reasoning_tokens ?? 0;
      const cached = u.prompt_cache_hit_tokens ?? u.prompt_tokens_details?.cached_tokens ?? 0;
      addStat(r, 'prompt', String(u.prompt_tokens), 'prompt');
      addStat(r, 'cached', String(cached), 'cached');
      addStat(r, 'reasoning', String(reasoningTokens), 'reasoning');
      addStat(r, 'answer', String(u.completion_tokens - reasoningTokens), 'answer');
    } else if (r.stopped) {
      // A stopped stream never gets its usage event: show what arrived, one token per delta.
      addStat(r, 'reasoning', `~${r.reasoningChunks} received`, 'reasoning');
      addStat(r, 'answer', `~${r.answerChunks} received`, 'answer');
    }
    addStat(r, 'first token', seconds(r.firstToken === null ? null : r.firstToken - r.start), 'ttft');
    addStat(r, 'first answer token',
            seconds(r.firstAnswer === null ? null : r.firstAnswer - r.start), 'ttfat');
    addStat(r, 'total', seconds(r.end - r.start), 'total');
    if (u) {
      const cost = costOf(u, r.model);
      addStat(r, 'cost', cost === null ? 'no price table'
                                       : `${prices.currency} ${cost.toFixed(6)}`, 'cost');
    }
  }

  // ---- streaming ----

  // Reads a text/event-stream body and calls onEvent(data) for each event's data.
  async function readEvents(body, onEvent) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (data.length) onEvent(data.join('\n'));
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
        }
      }
      if (done) break;
    }
    if (data.length) onEvent(data.join('\n'));
  }

  function setBusy(busy) {
    ui.send.disabled = busy;
    ui.stop.hidden = !busy;
    ui.stop.disabled = !busy;
  }

  function requestBody(messages) {
    const body = {
      model: ui.model.value,
      messages,
      stream: true,
      stream_options: { include_usage: true },
      reasoning_effort: ui.effort.value,
    };
    const t = parseFloat(ui.temperature.value);
    if (Number.isFinite(t)) body.temperature = t;
    const n = parseInt(ui.maxTokens.value, 10);
    if (Number.isFinite(n)) body.max_tokens = n;
    return body;
  }

  async function send(text) {
    showNotice('');
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: 'system', content: system });
    messages.push(...history, { role: 'user', content: text });

    const userTurn = addUserTurn(text);
    const r = {
      controller: new AbortController(), model: ui.model.value, view: null, start: 0,
      firstToken: null, firstReasoning: null, firstAnswer: null, end: null, usage: null,
      reasoningChunks: 0, answerChunks: 0, answerText: '', error: null, stopped: false, timer: 0,
    };
    r.view = addAssistantTurn(r.model);
    current = r;
    setBusy(true);
    scrollToEnd(true);
    r.timer = setInterval(() => updateThinking(r, performance.now()), 100);
    r.start = performance.now();
    try {
      const res = await fetch('v1/chat/completions', {
        method: 'POST',
        headers: headers({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
        body: JSON.stringify(requestBody(messages)),
        signal: r.controller.signal,
      });
      r.streamId = res.headers.get('X-Moeserve-Stream-Id');
      if (!res.ok) {
        r.error = await errorFromResponse(res);
      } else {
        await readEvents(res.body, (data) => onEvent(r, data));
      }
    } catch (e) {
      if (r.stopped || e.name === 'AbortError') {
        r.stopped = true;
      } else if (!r.error) {
        r.error = r.firstToken === null ? networkError()
                                        : 'The connection to the gateway broke off mid-answer.';
      }
    }
    r.end = performance.now();
    clearInterval(r.timer);
    finish(r, userTurn, text);
  }

  function onEvent(r, data) {
    if (data === '[DONE]') return;
    let ev;
    try { ev = JSON.parse(data); } catch (e) { return; }
    if (ev.error) {
      r.error = 'The answer broke off: ' + (ev.error.message || 'the server reported an error.');
      return;
    }
    if (ev.usage) r.usage = ev.usage;
    const delta = ev.choices && ev.choices[0] && ev.choices[0].delta;
    if (!delta) return;
    const now = performance.now();
    if (delta.reasoning_content) {
      if (r.firstToken === null) r.firstToken = now;
      if (r.firstReasoning === null) {
        r.firstReasoning = now;
        r.view.thinking.hidden = false;
      }
      r.reasoningChunks += 1;
      r.view.reasoning.firstChild.appendData(delta.reasoning_content);
      r.view.turn.dataset.state = 'thinking';
    }
    if (delta.content) {
      if (r.firstToken === null) r.firstToken = now;
      if (r.firstAnswer === null) r.firstAnswer = now;
      r.answerChunks += 1;
      r.answerText += delta.content;
      r.view.answer.firstChild.appendData(delta.content);
      r.view.turn.dataset.state = 'answering';
    }
    updateThinking(r, now);
    scrollToEnd(false);
  }

  function finish(r, userTurn, text) {
    current = null;
    setBusy(false);
    const turn = r.view.turn;
    turn.dataset.state = r.error ? 'error' : (r.stopped ? 'stopped' : 'done');
    updateThinking(r, r.end);
    showStats(r);
    if (r.stopped) turn.append(el('p', 'status-note', 'Stopped. The server was told to cancel.'));
    if (r.error) turn.append(el('p', 'error', r.error));
    // Only turns with an answer become history; the others stay on screen but are not sent.
    if (r.answerText) {
      history.push({ role: 'user', content: text }, { role: 'assistant', content: r.answerText });
    } else {
      userTurn.classList.add('excluded');
      turn.classList.add('excluded');
      turn.append(el('p', 'status-note', 'Not part of the conversation (no answer).'));
    }
    scrollToEnd(false);
    ui.prompt.focus();
  }

  // ---- wiring ----

  ui.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.prompt.value.trim();
    if (!text || current) return;
    if (!ui.model.value) {
      showNotice('No model to talk to yet: the model list did not load.');
      return;
    }
    ui.prompt.value = '';
    send(text);
  });
  $('settings').addEventListener('submit', (e) => e.preventDefault());
  ui.prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  // Closing the connection alone leaves a resumable stream generating for the gateway's grace
  // period (a reconnect could continue it); Stop means now, so the gateway is told to cancel.
  function stopCurrent() {
    if (!current) return;
    current.stopped = true;
    if (current.streamId) {
      fetch(`v1/chat/completions/${encodeURIComponent(current.streamId)}/cancel`,
            { method: 'POST', headers: headers({}) }).catch(() => {});
    }
    current.controller.abort();
  }
  ui.stop.addEventListener('click', stopCurrent);
  ui.newChat.addEventListener('click', () => {
    stopCurrent();
    history = [];
    ui.transcript.replaceChildren(ui.emptyHint);
    ui.emptyHint.hidden = false;
    showNotice('');
    ui.prompt.focus();
  });
  for (const k of kSaved) ui[k].addEventListener('change', saveSettings);
  ui.apiKey.addEventListener('change', () => { saveSettings(); loadModels(); loadPrices(); });
  ui.model.addEventListener('change', describeModel);

  if (window.matchMedia('(max-width: 720px)').matches) ui.settingsPanel.open = false;
  loadSettings();
  setBusy(false);
  loadModels().then(loadPrices);
})();
