#!/usr/bin/env python3
"""Issue 9's API surface through a real cluster (`moeserve up`: Redis, KV cache, an expert shard,
prefill and decode workers, router, gateway) and the official OpenAI Node SDK: request fields,
logprobs (checked against log-softmax of `moeserve generate --all-logits` in numpy), presence and
frequency penalties, n > 1, FIM and chat prefix completion.
Usage: test_api.py BIN_DIR WORKDIR"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np

BIN, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", "..", "..", "tools", "node")
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


def start_cluster(model, port, run_dir):
    p = subprocess.Popen([MOESERVE, "up", "--model", model, "--port", str(port), "--run-dir",
                          run_dir, "--prefill", "1", "--decode", "1", "--shards", "1",
                          "--compute-dtype", "f32"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
    raise SystemExit("cluster did not start:\n" + "".join(lines))


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bias_tokens():
    """The greedy first token of "The quick brown fox" (to ban), the runner-up numpy finds in
    the same logits (what the ban must give), and a token to force (the third most likely)."""
    ref, _ = reference(model, "--prompt", "The quick brown fox", "--max-new-tokens", "1")
    order = np.argsort(-np.asarray(ref["step_logits"][0][:VOCAB], dtype=np.float64),
                       kind="stable")
    return int(order[0]), int(order[1]), int(order[2])


def check_logit_bias(o, ban, runner_up, force):
    if "sdk_error" in o:
        return check(False, f"logit_bias: {o['sdk_error']}")
    check(o["banned"] == [token_string(runner_up)],
          f"logit_bias -100 on the greedy token {ban} gives numpy's runner-up {runner_up}: "
          f"{o['banned']}")
    check(o["forced"] == [token_string(force)] * 6,
          f"logit_bias +100 on token {force} makes every sampled token that one: {o['forced']}")
    chat = o["chat_reasoning"] + o["chat"]
    check(len(chat) == 4 and all(t == token_string(force) for t in chat),
          f"chat takes logit_bias too: {chat}")
    st = o["stopped"]
    check(st["text"] == "" and st["finish_reason"] == "stop" and st["completion_tokens"] == 0,
          f"stop_token_ids: the greedy first token {ban} as a stop id ends at once: {st}")
    held = o["held"]
    check(held["tokens"][:1] == [token_string(runner_up)] and held["completion_tokens"] >= 3 and
          token_string(ban) not in held["tokens"][:3],
          f"min_tokens 3 keeps the stop id out of the first 3 tokens (numpy's runner-up first): "
          f"{held}")
    want_param = {"min_tokens_over_max": "min_tokens", "stop_token_outside_vocab": "stop_token_ids"}
    for name, err in o["bad"].items():
        param = want_param.get(name, "logit_bias")
        check(err is not None and err["status"] == 400 and err["param"] == param,
              f"{name}: 400 naming {param} ({err})")


def sdk(port, strict_port, info, bias):
    env = dict(os.environ, STRICT_BASE_URL=f"http://127.0.0.1:{strict_port}/v1",
               KVCACHE_ADDR=info["kvcache"], PROTO_DIR=os.path.join(HERE, "..", "..", "..", "proto"),
               BIAS_BAN=str(bias[0]), BIAS_FORCE=str(bias[2]))
    r = subprocess.run(["node", os.path.join(HERE, "api_sdk.mjs"), f"http://127.0.0.1:{port}/v1",
                        "tiny", NODE_DIR], capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        raise SystemExit(f"api_sdk.mjs failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def check_fields(o):
    if "sdk_error" in o:
        return check(False, f"fields: {o['sdk_error']}")
    check(o["developer"]["usage"]["completion_tokens"] == 6,
          f"max_completion_tokens limits the completion: {o['developer']['usage']}")
    check(o["developer"]["message"] == o["system"]["message"],
          "a developer message is rendered as a system message (same greedy output)")
    check(o["equal_max"]["completion_tokens"] == 3, "equal max_tokens and max_completion_tokens")
    want = {"max_completion_tokens_type": "max_completion_tokens",
            "max_tokens_disagree": "max_completion_tokens", "user_type": "user",
            "metadata_type": "metadata", "temperature_type": "temperature",
            "logprobs_type": "logprobs", "n_type": "n", "stream_options_type": "stream_options.include_usage",
            "developer_content": "messages[0].content"}
    for key, param in want.items():
        e = o["bad"].get(key)
        check(e is not None and e["name"] == "BadRequestError" and e["status"] == 400 and
              param in (e["param"] or "") and param.split(".")[-1].split("[")[0] in e["message"],
              f"wrong type -> 400 naming '{param}': {e}")


def token_bytes_table(model_dir):
    """id -> bytes from tokenizer.json alone (the byte-level alphabet inverted), independent of
    the C++ tokenizer."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    to_byte = {chr(c): b for b, c in zip(printable, chars)}
    tok = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    table = {i: bytes(to_byte[ch] for ch in s) if all(ch in to_byte for ch in s) else s.encode()
             for s, i in tok["model"]["vocab"].items()}
    for a in tok["added_tokens"]:
        table[a["id"]] = a["content"].encode()
    return table


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def reference(model_dir, *args):
    """`moeserve generate --json --all-logits` (f32, greedy) with log-softmax per step over the
    tokenizer's ids (the gateway samples only those)."""
    r = subprocess.run([MOESERVE, "generate", "--model", model_dir, "--compute-dtype", "f32",
                        "--temperature", "0", "--json", "--all-logits", *args],
                       capture_output=True, text=True, check=True)
    j = json.loads(r.stdout)
    return j, [log_softmax(step[:VOCAB]) for step in j["step_logits"]]


def close(a, b, tol=2e-4):
    return a is not None and b is not None and abs(float(a) - float(b)) <= tol


def check_chat_entries(entries, tokens, steps, what):
    """Chat logprob entries against the reference tokens and log-softmaxes."""
    ok = len(entries) == len(tokens)
    worst = 0.0
    for e, t, ls in zip(entries, tokens, steps):
        ok &= bytes(e["bytes"]) == BYTES[t]
        ok &= e["token"] == (BYTES[t].decode() if valid_utf8(BYTES[t]) else
                             "bytes:" + "".join(f"\\x{b:02x}" for b in BYTES[t]))
        worst = max(worst, abs(e["logprob"] - ls[t]))
        order = np.argsort(-ls, kind="stable")[:len(e["top_logprobs"])]
        for alt, i in zip(e["top_logprobs"], order):
            ok &= bytes(alt["bytes"]) == BYTES[int(i)]
            worst = max(worst, abs(alt["logprob"] - ls[i]))
    check(ok and worst <= 2e-4, f"{what}: {len(entries)} entries equal the reference "
                                f"tokens, bytes and top alternatives (max |diff| {worst:.2e})")


def chars_before(tokens):
    """Characters of completion text decoded before the next token: a trailing incomplete UTF-8
    sequence is still held back, other bad bytes count as U+FFFD."""
    b = b"".join(BYTES[t] for t in tokens)
    for cut in range(1, min(3, len(b)) + 1):
        lead = b[-cut]
        need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 0
        if need > cut and all(x >> 6 == 0b10 for x in b[len(b) - cut + 1:]):
            b = b[:-cut]
            break
    return len(b.decode(errors="replace"))


def valid_utf8(b):
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False


def check_logprobs(o):
    if "sdk_error" in o:
        return check(False, f"logprobs: {o['sdk_error']}")
    ref, steps = reference(model, "--prompt", "Say hello.", "--chat", "--max-new-tokens", "12")
    tokens = ref["tokens"]
    lp = o["chat"]["choice"]["logprobs"]
    entries = lp["reasoning_content"] + lp["content"]
    check(lp["refusal"] is None and len(lp["reasoning_content"]) ==
          o["chat"]["usage"]["completion_tokens_details"]["reasoning_tokens"],
          f"chat logprobs split by section: {len(lp['reasoning_content'])} reasoning, "
          f"{len(lp['content'])} content")
    check_chat_entries(entries, tokens, steps, "chat logprobs vs log_softmax(generate logits)")
    joined = b"".join(bytes(e["bytes"]) for e in lp["content"]).decode(errors="replace")
    check(joined == o["chat"]["choice"]["message"]["content"] or not lp["content"],
          "the content entries' bytes spell the content")
    streamed = {"reasoning_content": [], "content": []}
    for c in o["chat_stream"]["chunks"]:
        if c.get("logprobs"):
            for k in streamed:
                streamed[k] += c["logprobs"].get(k) or []
    check(streamed == {k: lp[k] for k in streamed},
          "streamed chat logprobs equal the non-streamed ones")

    ref, steps = reference(model, "--prompt", "The quick brown fox", "--max-new-tokens", "12")
    c = o["completion"]["choice"]["logprobs"]
    n = len(c["tokens"])
    ok = n == len(ref["tokens"][:12]) and n == o["completion"]["usage"]["completion_tokens"]
    worst = 0.0
    for k in range(min(n, len(ref["tokens"]))):
        t = ref["tokens"][k]
        worst = max(worst, abs(c["token_logprobs"][k] - steps[k][t]))
        want = sorted(steps[k])[::-1][:5]
        got = sorted(c["top_logprobs"][k].values())[::-1]
        ok &= len(got) <= 5 and all(close(a, b) for a, b in zip(got, want))
        ok &= c["tokens"][k] == (BYTES[t].decode() if valid_utf8(BYTES[t]) else c["tokens"][k])
    check(ok and worst <= 2e-4, f"completion logprobs (tokens, token_logprobs, top 5) equal "
                                f"log_softmax of generate's logits (max |diff| {worst:.2e})")
    offsets = [chars_before(ref["tokens"][:k]) for k in range(n)]
    check(c["text_offset"] == offsets,
          f"text_offset counts the characters before each token: {c['text_offset']}")
    streamed = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for ch in o["completion_stream"]["chunks"]:
        if ch.get("logprobs"):
            for k in streamed:
                streamed[k] += ch["logprobs"][k]
    check(streamed == c, "streamed completion logprobs equal the non-streamed ones")

    f = o["forced"]
    entries = f["logprobs"]["reasoning_content"] + f["logprobs"]["content"]
    close_at = [i for i, e in enumerate(entries) if bytes(e["bytes"]) == b"</think>"]
    spelled = b"".join(bytes(e["bytes"]) for e in f["logprobs"]["content"]).decode(errors="replace")
    check(spelled.lstrip("\n") == f["content"] and f["content"],
          f"the content entries' bytes spell the content ({len(spelled)} characters)")
    check(len(entries) == f["usage"]["completion_tokens"] == 300 and close_at and
          entries[close_at[0]]["logprob"] == 0 and entries[close_at[0]]["top_logprobs"] == [],
          f"with a thinking budget every token has an entry ({len(entries)} for "
          f"{f['usage']['completion_tokens']}) and the forced </think> has logprob 0")


def token_string(t):
    b = BYTES[t]
    return b.decode() if valid_utf8(b) else "bytes:" + "".join(f"\\x{x:02x}" for x in b)


def check_penalties(o):
    """Each penalised greedy run equals `generate` with the same penalties, and replaying the
    raw logits in numpy with OpenAI's rule (logit -= presence * [count > 0] + frequency * count,
    over generated tokens) picks every token and gives every logprob; then the direction:
    positive penalties repeat less than none, negative ones more."""
    if "sdk_error" in o:
        return check(False, f"penalties: {o['sdk_error']}")
    repeats = {}
    for key, run in o.items():
        presence, frequency = (float(x) for x in key.split(","))
        ref = json.loads(subprocess.run(
            [MOESERVE, "generate", "--model", model, "--compute-dtype", "f32", "--temperature",
             "0", "--json", "--all-logits", "--prompt", "The quick brown fox", "--max-new-tokens",
             "32", "--presence-penalty", str(presence), "--frequency-penalty", str(frequency)],
            capture_output=True, text=True, check=True).stdout)
        tokens = ref["tokens"]
        got = run["logprobs"]
        same = got["tokens"] == [token_string(t) for t in tokens]
        picks, worst = True, 0.0
        for k, t in enumerate(tokens):
            counts = np.bincount(np.asarray(tokens[:k], dtype=np.int64), minlength=VOCAB)[:VOCAB]
            logits = np.asarray(ref["step_logits"][k][:VOCAB], dtype=np.float64)
            logits = logits - presence * (counts > 0) - frequency * counts
            picks &= int(np.argmax(logits)) == t
            if k < len(got["token_logprobs"]):
                worst = max(worst, abs(got["token_logprobs"][k] - log_softmax(logits)[t]))
        check(same and picks and worst <= 2e-4,
              f"penalties presence={presence} frequency={frequency}: cluster tokens equal "
              f"generate's, numpy's penalised argmax picks each, logprobs match "
              f"(max |diff| {worst:.2e})")
        repeats[key] = len(tokens) - len(set(tokens))
    print(f"     repeated tokens in 32 by (presence, frequency): {repeats}")
    check(repeats["0,-2"] > repeats["0,0"] and repeats["-2,0"] > repeats["0,0"],
          "negative penalties repeat more than no penalty")
    # The random model hardly repeats unpenalised, so the positive penalties are measured
    # against runs made to repeat by the other (negative) penalty.
    check(repeats["-2,2"] < repeats["-2,0"] and repeats["2,-2"] < repeats["0,-2"],
          "a positive frequency (presence) penalty repeats less than the same request without")


def check_n(o):
    if "sdk_error" in o:
        return check(False, f"n: {o['sdk_error']}")
    choices = o["chat"]["choices"]
    msgs = [(c["message"]["reasoning_content"], c["message"]["content"]) for c in choices]
    check([c["index"] for c in choices] == [0, 1, 2] and len(set(msgs)) == 3,
          f"n=3 at temperature 1 with a seed: 3 indexed choices, all different: {msgs}")
    entries = sum(len(c["logprobs"]["reasoning_content"]) + len(c["logprobs"]["content"])
                  for c in choices)
    check(o["chat"]["usage"]["completion_tokens"] == entries and entries > 8,
          f"usage sums the completion tokens of every choice: {o['chat']['usage']}")
    check([(m["reasoning_content"], m["content"]) for m in o["chat_again"]] == msgs,
          "the same seeded request gives the same choices again")
    check((o["chat_n1"]["reasoning_content"], o["chat_n1"]["content"]) == msgs[0],
          "choice 0 is the n=1 request with the same seed")
    per = o["chat_stream"]["per"]
    check(sorted(per) == ["0", "1", "2"] and
          [(per[str(i)]["reasoning"] or None, per[str(i)]["content"]) for i in range(3)] == msgs
          and all(per[str(i)]["roles"] == 1 and per[str(i)]["finish_reason"] for i in range(3)),
          "streamed n=3: each index has its role, deltas and finish reason, same text as "
          "non-streamed")
    check(o["chat_stream"]["usage"] == o["chat"]["usage"],
          "streamed n=3 usage equals the non-streamed usage")
    check(o["greedy"][0] == o["greedy"][1], "n=2 at temperature 0: identical choices")
    comp = [c["text"] for c in o["completion"]]
    st = o["completion_stream"]
    check(len(comp) == 2 and comp[0] != comp[1] and [st["0"]["text"], st["1"]["text"]] == comp,
          f"completions n=2 (token-id prompt), streamed and not: {comp}")
    sh = o["shared"]
    blocks = sh["usage"]["prompt_tokens"] // sh["block_tokens"]
    print(f"     n=3 over a {sh['usage']['prompt_tokens']}-token prompt ({blocks} full blocks): "
          f"published {sh['published']}, duplicates {sh['duplicates']}, fetched {sh['fetched']}")
    # Each choice's decode worker fetches the prompt's blocks (3 x blocks); with sharing the
    # prefills of choices 1 and 2 fetch them too (2 x blocks) instead of computing and publishing
    # them again (which would count 2 x blocks duplicates).
    check(sh["choices"] == 3 and sh["published"] == blocks and sh["duplicates"] == 0 and
          sh["fetched"] >= 5 * blocks,
          "n=3 shares the prompt's KV blocks: computed and stored once, fetched by the others")


def check_beta(o):
    if "sdk_error" in o:
        return check(False, f"beta: {o['sdk_error']}")
    check(o["models"] == ["tiny"], f"/beta/models: {o['models']}")
    ref = json.loads(subprocess.run(
        [MOESERVE, "generate", "--model", model, "--compute-dtype", "f32", "--temperature", "0",
         "--json", "--max-new-tokens", "10", "--prompt",
         "<｜fim▁begin｜>def add(a, b):\n<｜fim▁hole｜>\n    return c\n<｜fim▁end｜>"],
        capture_output=True, text=True, check=True).stdout)
    check(o["fim"]["text"] == ref["text"] and
          o["fim"]["usage"]["prompt_tokens"] == ref["prompt_tokens"],
          f"FIM /beta/completions equals generate on the FIM-token prompt "
          f"({ref['prompt_tokens']} prompt tokens): {o['fim']['text']!r}")
    check(o["fim_stream"].get("0", {}).get("text") == o["fim"]["text"],
          "streamed FIM equals the non-streamed")

    def split(text):
        if "</think>" in text:
            r, c = text.split("</think>", 1)
            return r, c.lstrip("\n")
        return text, ""

    for key, thought_open in (("content", False), ("reasoning", True), ("both", False)):
        got, raw = o[f"prefix_{key}"], o[f"raw_{key}"]
        msg = got["message"]
        if thought_open:
            want = split(raw["text"])
            have = (msg.get("reasoning_content") or "", msg["content"] or "")
        else:
            want = ("", raw["text"])  # the thought is closed: everything is answer
            have = (msg.get("reasoning_content") or "", msg["content"] or "")
        check(have == want and got["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"],
              f"chat prefix completion ({key}) continues the message like the raw prompt: "
              f"{have!r} vs {want!r}")
    for key, param in (("bad_prefix", "messages[0].prefix"), ("bad_suffix", "suffix")):
        e = o[key]
        check(e is not None and e["status"] == 400 and e["param"] == param,
              f"{key} -> 400 naming {param}: {e}")


def check_reasoner_rule(o):
    if o is None or "sdk_error" in o:
        return check(False, f"reasoner rule: {o}")
    e = o["chat_logprobs"]
    check(e is not None and e["status"] == 400 and e["param"] == "logprobs",
          f"--reject-logprobs-for-reasoner: chat logprobs -> 400: {e}")
    check(o["chat_plain"] is None and o["completion_logprobs"] is None,
          "--reject-logprobs-for-reasoner: chat without logprobs and completions still served")


def start_strict_gateway(info):
    port = free_port()
    p = subprocess.Popen([os.path.join(BIN, "moeserve-gateway"), "--model", model, "--host",
                          "127.0.0.1", "--port", str(port), "--grpc-port", "0", "--router",
                          info["router"], "--reject-logprobs-for-reasoner"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("the second gateway did not start")


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                   check=True, stdout=subprocess.DEVNULL)

port = free_port()
run_dir = os.path.join(WORK, "run")
shutil.rmtree(run_dir, ignore_errors=True)
BYTES = token_bytes_table(model)
VOCAB = max(BYTES) + 1
cluster = start_cluster(model, port, run_dir)
strict = None
try:
    info = json.load(open(os.path.join(run_dir, "cluster.json")))
    strict, strict_port = start_strict_gateway(info)
    bias = bias_tokens()
    out = sdk(port, strict_port, info, bias)
    check_fields(out["fields"])
    check_logprobs(out["logprobs"])
    check_reasoner_rule(out.get("reasoner_rule"))
    check_penalties(out["penalties"])
    check_logit_bias(out["logit_bias"], *bias)
    check_n(out["n"])
    check_beta(out["beta"])
finally:
    if strict is not None:
        stop(strict)
    stop(cluster)
    check(cluster.returncode == 0, f"moeserve up exited cleanly ({cluster.returncode})")

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
