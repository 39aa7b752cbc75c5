#!/usr/bin/env python3
"""The whole cluster through `moeserve up` (real processes, real Redis, real gRPC, loopback):
its greedy output equals the single-process `moeserve generate`, streaming works with reasoning
apart, a repeated prefix is served from the KV cache, a decode worker killed mid-stream costs
nothing, and stopping `up` leaves no process behind.  Usage: test_cluster.py BIN_DIR WORKDIR"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

BIN, WORK = sys.argv[1], sys.argv[2]
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools", "node")
MOESERVE = os.path.join(BIN, "moeserve")
FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(port, path, body, timeout=300):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stream(port, body, on_event=None):
    """POSTs a streaming chat request; returns the parsed SSE JSON events."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    events = []
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            events.append(json.loads(data))
            if on_event:
                on_event(len(events))
    return events


def start_cluster(model, port, extra, run_dir):
    p = subprocess.Popen([MOESERVE, "up", "--model", model, "--port", str(port), "--run-dir",
                          run_dir, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    deadline = time.time() + 600
    lines = []
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "moeserve is up" in line:
            return p
    p.kill()
    raise SystemExit("cluster did not start:\n" + "".join(lines) + logs(run_dir))


def logs(run_dir):
    out = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name.endswith(".log"):
            with open(os.path.join(run_dir, name), errors="replace") as f:
                out.append(f"--- {name}\n" + f.read()[-2000:])
    return "\n".join(out)


def children_of(pid):
    """(pid, cmdline) of the processes whose parent is `pid`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append((int(d), open(f"/proc/{d}/cmdline").read().replace("\0", " ")))
        except (OSError, ValueError, IndexError):
            pass
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def stop_cluster(p):
    kids = [pid for pid, _ in children_of(p.pid)]
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
    return [pid for pid in kids if alive(pid)]


def finish_cluster(p, run_dir, label):
    """Stops `moeserve up`, checks it exited cleanly and left no process, prints logs on failure."""
    left = stop_cluster(p)
    check(p.returncode == 0, f"[{label}] moeserve up exited cleanly ({p.returncode})")
    check(not left, f"[{label}] no process left behind: {left}")
    if FAILS:
        print(logs(run_dir))


def content_of(events):
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or ""
                        for e in events if e.get("choices"))
    content = "".join(e["choices"][0]["delta"].get("content") or ""
                      for e in events if e.get("choices"))
    return reasoning, content


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                   check=True)
name = "tiny"

def raw_post(port, path, data):
    """One HTTP/1.1 POST over a plain socket. A server may answer an oversized body before it
    has read it and close; the answer is still read after a failed send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.sendall(head + data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    chunks = []
    try:
        while True:
            c = sock.recv(65536)
            if not c:
                break
            chunks.append(c)
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        return 0, ""
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body.decode(errors="replace")


def bad_requests(port):
    """Malformed requests: each must get its documented 4xx and an OpenAI-shaped error."""
    big = "x" * (9 << 20)
    cases = [
        ("/v1/chat/completions", b"{not json", 400),
        ("/v1/chat/completions", b"", 400),
        ("/v1/chat/completions", b"[]", 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "h"}]}, 404),
        ("/v1/chat/completions", {"model": name, "messages": []}, 400),
        ("/v1/chat/completions", {"model": name, "messages": "hi"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "wizard", "content": "h"}]}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user"}]}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": 5}]}, 400),
        ("/v1/chat/completions", {"model": 7, "messages": [{"role": "user", "content": "h"}]}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "max_tokens": 0}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "max_tokens": -5}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "max_tokens": 10**9}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "max_tokens": "ten"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "temperature": 5}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "temperature": "hot"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "top_p": 0}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "top_p": 1.5}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "presence_penalty": 9}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "frequency_penalty": -9}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "stop": ["a", "b", "c", "d", "e"]}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "stop": 3}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "reasoning_effort": "extreme"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "stream": "yes"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h"}], "seed": "s"}, 400),
        ("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "h " * 20000}]}, 400),
        ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}'.replace(b"\\xff\\xfe", b"\xff\xfe"), 400),
        ("/v1/completions", {"model": name, "prompt": [1, 2, 999999]}, 400),
        ("/v1/completions", {"model": name, "prompt": [1, -2]}, 400),
        ("/v1/completions", {"model": name, "prompt": []}, 400),
        ("/v1/completions", {"model": name, "prompt": {"a": 1}}, 400),
        ("/v1/completions", {"model": name}, 400),
        ("/v1/completions", {"model": name, "prompt": big}, 413),
    ]
    for path, body, want in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, text = raw_post(port, path, data)
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = ""
        ok = (status == want or (want == 413 and status == 400)) and message
        check(bool(ok), f"bad request -> {status} (want {want}) {message[:90]!r} for {str(body)[:70]}")
    return len(cases)


def completion_equals_generate(port, compute, label, generate_args=()):
    """A greedy completion from the cluster against single-process generate (with
    `generate_args` added); returns the text."""
    status, body = post(port, "/v1/completions", {
        "model": name, "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0})
    check(status == 200, f"[{label}] completion served: {status} {body[:200]}")
    got = json.loads(body)["choices"][0]["text"] if status == 200 else None
    ref = json.loads(subprocess.run(
        [MOESERVE, "generate", "--model", model, "--prompt", "The quick brown fox",
         "--max-new-tokens", "16", "--temperature", "0", "--compute-dtype", compute, "--json",
         *generate_args],
        capture_output=True, text=True, check=True).stdout)["text"]
    check(got == ref, f"[{label}] equals single-process generate: {got!r} vs {ref!r}")
    return ref


def prompt_scoring(port, compute):
    """Completions' echo with logprobs against single-process generate --prompt-logprobs: as
    lm-evaluation-harness scores a continuation (token ids, echo, logprobs 1, max_tokens 1,
    temperature 0, read from token_logprobs[ctxlen:-1]) and as older clients do (text, max_tokens
    0), repeated (a scored prompt never comes from the KV cache) and streamed."""
    # f32: exactly what the single-process engine computes (measured equal in bf16 too, where
    # the parity tolerance of tests/reference is allowed).
    tol = 0.0 if compute == "f32" else 0.05

    def reference(args, top):
        out = subprocess.run([MOESERVE, "generate", "--model", model, *args, "--max-new-tokens",
                              "1", "--temperature", "0", "--compute-dtype", compute, "--json",
                              "--prompt-logprobs", str(top)],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["prompt_logprobs"]

    def max_diff(got, want):
        return max(abs(g - w) for g, w in zip(got, want)) if got else 0.0

    # lm-eval sends the ids its tokenizer made of the text; the reference scores the text, so
    # both normalise over the tokenizer's ids (the model's padding rows are never sampled).
    long_text = "The quick brown fox jumps over the lazy dog. " * 7  # about 70 tokens
    ids = json.loads(subprocess.run([MOESERVE, "tokenize", "--model", model, "--text", long_text,
                                     "--json"], capture_output=True, text=True,
                                    check=True).stdout)["ids"]
    want = [e["logprob"] for e in reference(["--prompt", long_text], 1)]
    for attempt in ("first", "repeated"):
        st, body = post(port, "/v1/completions", {"model": name, "prompt": ids, "echo": True,
                                                  "max_tokens": 1, "logprobs": 1,
                                                  "temperature": 0})
        check(st == 200, f"[{compute}] scoring request ({attempt}): {st} {body[:200]}")
        if st != 200:
            return
        out = json.loads(body)
        choice, usage = out["choices"][0], out["usage"]
        lp = choice["logprobs"]
        made = usage["completion_tokens"]
        check(len(lp["tokens"]) == len(ids) + made and lp["token_logprobs"][0] is None and
              lp["top_logprobs"][0] is None,
              f"[{compute}] echo: {len(lp['tokens'])} logprob entries for {len(ids)} prompt and "
              f"{made} completion tokens, the first null")
        got = lp["token_logprobs"][1:len(ids)]
        d = max_diff(got, want)
        check(len(got) == len(want) and d <= tol,
              f"[{compute}] prompt logprobs ({attempt}) equal generate --prompt-logprobs: max "
              f"|d| {d:.3g} <= {tol}")
        check(all(len(t) == 1 for t in lp["top_logprobs"][1:]),
              f"[{compute}] one alternative per scored token")
        check(usage["prompt_cache_hit_tokens"] == 0,
              f"[{compute}] a scored prompt runs whole ({attempt}): {usage}")

    # n > 1: choice 0 scores the prompt, the other choices show its scores (and take the
    # prefix cache instead of running the prompt again).
    st, body = post(port, "/v1/completions", {"model": name, "prompt": ids, "echo": True, "n": 2,
                                              "max_tokens": 2, "logprobs": 1, "seed": 5})
    check(st == 200, f"[{compute}] scoring with n 2: {st} {body[:200]}")
    if st == 200:
        both = [c["logprobs"]["token_logprobs"][1:len(ids)] for c in json.loads(body)["choices"]]
        check(len(both) == 2 and all(len(g) == len(want) and max_diff(g, want) <= tol
                                     for g in both),
              f"[{compute}] both choices carry the prompt's logprobs")

    # lm-eval with batch_size > 1: several token-id prompts in one request, choice i scoring
    # prompt i as a request of its own does; usage counts every prompt.
    short = ids[:20]
    st, body = post(port, "/v1/completions", {"model": name, "prompt": [ids, short], "echo": True,
                                              "max_tokens": 1, "logprobs": 1, "temperature": 0})
    st1, body1 = post(port, "/v1/completions", {"model": name, "prompt": short, "echo": True,
                                                "max_tokens": 1, "logprobs": 1, "temperature": 0})
    check(st == 200 and st1 == 200, f"[{compute}] a batch of two prompts: {st} {body[:200]}")
    if st == 200 and st1 == 200:
        out = json.loads(body)
        got = sorted(out["choices"], key=lambda c: c["index"])
        alone = json.loads(body1)["choices"][0]["logprobs"]["token_logprobs"]
        check([c["index"] for c in got] == [0, 1] and
              got[0]["logprobs"]["token_logprobs"][1:len(ids)] == want and
              got[1]["logprobs"]["token_logprobs"] == alone and
              out["usage"]["prompt_tokens"] == len(ids) + len(short),
              f"[{compute}] batched prompts score as each alone, in order; usage sums them: "
              f"{out['usage']}")
    st, body = post(port, "/v1/completions", {"model": name, "prompt": ["Hello", "Goodbye"],
                                              "n": 2, "echo": True, "max_tokens": 2})
    texts = [c["text"] for c in sorted(json.loads(body)["choices"], key=lambda c: c["index"])] \
        if st == 200 else []
    check(len(texts) == 4 and all(t.startswith("Hello") for t in texts[:2]) and
          all(t.startswith("Goodbye") for t in texts[2:]),
          f"[{compute}] prompts x n choices, prompt i's choice j at index i * n + j: {texts}")

    text = "The quick brown fox jumps over the lazy dog"
    want_text = reference(["--prompt", text], 2)
    st, body = post(port, "/v1/completions", {"model": name, "prompt": text, "echo": True,
                                              "max_tokens": 0, "logprobs": 2})
    check(st == 200, f"[{compute}] max_tokens 0 with echo: {st} {body[:200]}")
    if st == 200:
        out = json.loads(body)
        choice = out["choices"][0]
        lp = choice["logprobs"]
        got = lp["token_logprobs"][1:]
        check(choice["text"] == text and choice["finish_reason"] == "length" and
              out["usage"]["completion_tokens"] == 0 and
              len(lp["tokens"]) == out["usage"]["prompt_tokens"],
              f"[{compute}] max_tokens 0 echoes the prompt and scores only it: {choice['text']!r} "
              f"{choice['finish_reason']} {out['usage']}")
        d = max_diff(got, [e["logprob"] for e in want_text])
        check(len(got) == len(want_text) and d <= tol,
              f"[{compute}] text prompt's logprobs equal generate's: max |d| {d:.3g}")
        check("".join(lp["tokens"][1:]) == text and lp["text_offset"][1] == 0,
              f"[{compute}] the prompt's tokens spell it, offsets from 0: {lp['tokens'][:4]}")

    # vLLM's prompt_logprobs (completions per choice, chat on the response): each prompt token's
    # logprob, its rank, and the alternatives ranked 1, 2, against generate --prompt-logprobs.
    def check_vllm_scores(scores, prompt_ids, want, what):
        ok = len(scores) == len(prompt_ids) and scores[0] is None
        worst = 0.0
        for p in range(1, len(prompt_ids) if ok else 0):
            d, w = scores[p], want[p - 1]
            mine = d.get(str(prompt_ids[p]))
            tops = [d.get(str(t)) for t, _ in w["top"]]
            ok &= mine is not None and all(e is not None for e in tops)
            if not ok:
                break
            worst = max([worst, abs(mine["logprob"] - w["logprob"])] +
                        [abs(e["logprob"] - lpw) for e, (_, lpw) in zip(tops, w["top"])])
            listed = [t for t, _ in w["top"]]
            ok &= [e["rank"] for e in tops] == list(range(1, len(tops) + 1))
            ok &= mine["rank"] == (listed.index(prompt_ids[p]) + 1 if prompt_ids[p] in listed
                                   else mine["rank"]) and mine["rank"] >= 1
            ok &= prompt_ids[p] in listed or mine["rank"] > len(listed)
        check(ok and worst <= tol, f"[{compute}] {what}: vLLM's prompt_logprobs equal generate's "
              f"(max |d| {worst:.3g}), ranks consistent")

    st, body = post(port, "/v1/completions", {"model": name, "prompt": text, "max_tokens": 1,
                                              "prompt_logprobs": 2})
    check(st == 200, f"[{compute}] completions with prompt_logprobs: {st} {body[:200]}")
    if st == 200:
        text_ids = json.loads(post(port, "/tokenize", {"prompt": text})[1])["tokens"]
        check_vllm_scores(json.loads(body)["choices"][0]["prompt_logprobs"], text_ids, want_text,
                          "completions")
    messages = [{"role": "user", "content": text}]
    st, body = post(port, "/v1/chat/completions", {"model": name, "messages": messages,
                                                   "max_tokens": 1, "prompt_logprobs": 2})
    check(st == 200, f"[{compute}] chat with prompt_logprobs: {st} {body[:200]}")
    if st == 200:
        st_t, tok = post(port, "/tokenize", {"messages": messages})
        chat_ids = json.loads(tok)["tokens"] if st_t == 200 else []
        # The chat's own rendering in `generate`, so that both normalise over the tokenizer's ids.
        want_chat = reference(["--prompt", text, "--chat"], 2)
        check_vllm_scores(json.loads(body)["prompt_logprobs"], chat_ids, want_chat, "chat")
    st, body = post(port, "/v1/chat/completions", {"model": name, "messages": messages,
                                                   "stream": True, "prompt_logprobs": 1})
    check(st == 400 and "prompt_logprobs" in body,
          f"[{compute}] prompt_logprobs with stream is a 400: {st} {body[:120]}")

    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                 data=json.dumps({"model": name, "prompt": text, "echo": True,
                                                  "max_tokens": 3, "temperature": 0,
                                                  "stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    texts = []
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                texts += [c["text"] for c in json.loads(line[5:])["choices"]]
    check(bool(texts) and texts[0].startswith(text),
          f"[{compute}] a streamed echo opens with the prompt: {texts[:2]}")


for compute, shards in (("f32", "2"), ("bf16", "1")):
    port = free_port()
    run_dir = os.path.join(WORK, f"run-{compute}")
    shutil.rmtree(run_dir, ignore_errors=True)
    # Stream resuming off: a disconnect cancels at once (the default grace period, which keeps
    # a stream generating for a reconnect, is tested in tests/integration/api).
    cluster = start_cluster(model, port, ["--prefill", "2", "--decode", "2", "--shards", shards,
                                          "--compute-dtype", compute,
                                          "--stream-resume-grace-s", "0"], run_dir)
    try:
        ref = completion_equals_generate(
            port, compute, f"{compute}: cluster, {shards} shard(s), prefill and decode apart")

        chat = {"model": name, "messages": [{"role": "user", "content": "Why is the sky blue? " * 40}],
                "max_tokens": 24, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        first = stream(port, chat)
        r1, c1 = content_of(first)
        usage = [e["usage"] for e in first if e.get("usage")]
        check(len(r1) > 0, f"[{compute}] streamed reasoning_content deltas")
        check(bool(usage) and usage[-1]["completion_tokens"] == 24,
              f"[{compute}] usage chunk with completion_tokens: {usage[-1:]}")
        second = stream(port, chat)
        r2, c2 = content_of(second)
        usage2 = [e["usage"] for e in second if e.get("usage")]
        check((r2, c2) == (r1, c1), f"[{compute}] a repeated request gives the same output")
        check(bool(usage2) and usage2[-1].get("prompt_cache_hit_tokens", 0) > 0,
              f"[{compute}] the repeated long prefix is a cache hit: {usage2[-1:]}")

        # The official OpenAI Node SDK as the client.
        sdk = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "openai_cluster.mjs"),
                              f"http://127.0.0.1:{port}/v1", name, NODE_DIR],
                             capture_output=True, text=True, timeout=600)
        check(sdk.returncode == 0, f"[{compute}] OpenAI SDK run: {sdk.stderr[-300:]}")
        if sdk.returncode == 0:
            o = json.loads(sdk.stdout)
            check(o["models"] == [name], f"[{compute}] SDK models.list: {o['models']}")
            check(o["chat"]["reasoning_content"] is not None and o["chat"]["usage"]["completion_tokens"] > 0,
                  f"[{compute}] SDK chat has reasoning_content and usage: {o['chat']['usage']}")
            check(o["first"]["chunks"] > 1 and o["first"]["usage"] is not None,
                  f"[{compute}] SDK stream with include_usage ({o['first']['chunks']} chunks)")
            check(o["second"]["usage"]["prompt_cache_hit_tokens"] > 0 and
                  (o["second"]["reasoning"], o["second"]["content"]) ==
                  (o["first"]["reasoning"], o["first"]["content"]),
                  f"[{compute}] SDK: the repeated long prefix hits the cache with the same output: "
                  f"{o['second']['usage']}")
            check(o["error"] is not None and o["error"]["status"] == 400,
                  f"[{compute}] SDK maps a 400 to an error: {o['error']}")

        # A prompt of token ids is used exactly as given (no BOS).
        ids = [5, 17, 300, 2000, 42]
        st_ids, b_ids = post(port, "/v1/completions", {"model": name, "prompt": ids,
                                                        "max_tokens": 8, "temperature": 0,
                                                        "logprobs": 1})
        ref_ids = json.loads(subprocess.run(
            [MOESERVE, "generate", "--model", model, "--prompt-ids", ",".join(map(str, ids)),
             "--max-new-tokens", "8", "--temperature", "0", "--compute-dtype", compute, "--json"],
            capture_output=True, text=True, check=True).stdout)["tokens"]
        ref_text = subprocess.run([MOESERVE, "detokenize", "--model", model, "--ids",
                                   ",".join(map(str, ref_ids))],
                                  capture_output=True, text=True).stdout[:-1]
        got_text = json.loads(b_ids)["choices"][0]["text"] if st_ids == 200 else None
        usage_ids = json.loads(b_ids).get("usage", {}) if st_ids == 200 else {}
        check(got_text == ref_text and usage_ids.get("prompt_tokens") == len(ids),
              f"[{compute}] token-id prompt used as given ({usage_ids.get('prompt_tokens')} prompt "
              f"tokens), same continuation as generate --prompt-ids: {got_text!r} vs {ref_text!r}")

        prompt_scoring(port, compute)

        # A client that disconnects mid-stream frees its KV blocks on the workers (at once, with
        # resuming off).
        info = json.load(open(os.path.join(run_dir, "cluster.json")))
        body = {"model": name, "messages": [{"role": "user", "content": "Go on forever."}],
                "max_tokens": 4000, "stream": True}
        sock = socket.create_connection(("127.0.0.1", port))
        data = json.dumps(body).encode()
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      f"application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
        got = b""
        while got.count(b"data:") < 5:
            got += sock.recv(4096)
        def status():
            return json.loads(subprocess.run([MOESERVE, "status", "--router", info["router"]],
                                             capture_output=True, text=True).stdout)["workers"]
        busy = status()
        sock.close()
        for _ in range(600):
            ws = status()
            if all(w["running"] == 0 and w["kv_blocks_free"] == w["kv_blocks_total"] for w in ws
                   if w["healthy"]):
                break
            time.sleep(0.1)
        check(any(w["running"] > 0 for w in busy), f"[{compute}] a worker was busy with the stream")
        check(all(w["running"] == 0 and w["kv_blocks_free"] == w["kv_blocks_total"]
                  for w in ws if w["healthy"]),
              f"[{compute}] after the client disconnected every KV block is free again: {ws}")

        if compute == "f32":
            # Kill -9 one decode worker mid-stream: the stream completes on the other one.
            body = dict(chat, max_tokens=64,
                        messages=[{"role": "user", "content": "Tell me a story."}])
            clean = content_of(stream(port, body))
            killed = []

            samples = {}

            def cpu(pid):
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                return int(f[11]) + int(f[12])

            def kill_decode(n):
                # Kill the decode worker serving this stream: the one whose CPU time grows
                # between the 4th and the 12th event.
                decoders = [pid for pid, cmd in children_of(cluster.pid)
                            if "moeserve-worker" in cmd and "--role decode" in cmd]
                if n == 4:
                    samples.update({pid: cpu(pid) for pid in decoders})
                if n == 12 and not killed and samples:
                    victim = max(samples, key=lambda pid: cpu(pid) - samples[pid])
                    check(cpu(victim) > samples[victim], "found the decode worker serving the stream")
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
            faulted = content_of(stream(port, body, on_event=kill_decode))
            check(len(killed) == 1, "a decode worker was killed mid-stream")
            check(faulted == clean, "the stream completed on another worker with the same tokens")

            # Kill -9 a prefill worker: requests are retried on the other one.
            prefills = [pid for pid, cmd in children_of(cluster.pid)
                        if "moeserve-worker" in cmd and "--role prefill" in cmd]
            os.kill(prefills[0], signal.SIGKILL)
            outs = [post(port, "/v1/completions", {"model": name, "prompt": f"Prompt {i}",
                                                   "max_tokens": 4, "temperature": 0})
                    for i in range(4)]
            check(all(st == 200 for st, _ in outs),
                  f"with a prefill worker killed every request still succeeds: {[st for st, _ in outs]}")

            # Kill Redis: the KV cache misses and everything is recomputed, nothing fails.
            # The KV cache's Redis, not the Batch API's (`redis-batch`, another port).
            kv_redis_port = info["redis"].rsplit(":", 1)[1]
            redis = [pid for pid, cmd in children_of(cluster.pid)
                     if "redis-server" in cmd and f":{kv_redis_port}" in cmd]
            check(len(redis) == 1, f"the KV cache's Redis found among up's children: {redis}")
            os.kill(redis[0], signal.SIGKILL)
            st3, b3 = post(port, "/v1/completions", {"model": name, "prompt": "The quick brown fox",
                                                      "max_tokens": 16, "temperature": 0})
            check(st3 == 200 and json.loads(b3)["choices"][0]["text"] == ref,
                  f"with Redis down the request succeeds with the same text: {st3}")

            n = bad_requests(port)
            st4, _ = post(port, "/v1/completions", {"model": name, "prompt": "still here?",
                                                     "max_tokens": 4})
            check(st4 == 200, f"after {n} malformed requests the cluster keeps serving")
    finally:
        finish_cluster(cluster, run_dir, compute)

# `moeserve up --backend cpu:2 --kv-cache-dtype bf16 --shards 2`: every worker runs its steps on
# a Backend (BackendModel) over a bf16 latent cache, and both expert shards their products
# (GroupedExperts over their uploaded experts): the path `--backend cuda` takes on GPUs in bf16
# compute. Over the CPU backend the cluster, prefill and decode apart with bf16 blocks through
# the KV-cache service and the experts on the shards, still equals single-process generate over
# the same kind of cache.
port = free_port()
run_dir = os.path.join(WORK, "run-backend")
shutil.rmtree(run_dir, ignore_errors=True)
kv_bf16 = ["--backend", "cpu:2", "--kv-cache-dtype", "bf16"]
cluster = start_cluster(model, port, ["--compute-dtype", "f32", "--shards", "2", *kv_bf16],
                        run_dir)
try:
    completion_equals_generate(port, "f32", "backend: workers on --backend cpu:2, bf16 cache",
                               kv_bf16)
    said = [f for f in sorted(os.listdir(run_dir)) if f.endswith(".log") and
            "steps run on backend 'cpu'" in open(os.path.join(run_dir, f), errors="replace").read()]
    check(len(said) == 2, f"[backend] both workers say their steps run on the backend: {said}")
    shards_said = [f for f in sorted(os.listdir(run_dir)) if f.endswith(".log") and
                   "expert products run on backend 'cpu'" in
                   open(os.path.join(run_dir, f), errors="replace").read()]
    check(len(shards_said) == 2,
          f"[backend] both shards say their products run on the backend: {shards_said}")
finally:
    finish_cluster(cluster, run_dir, "backend")

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
