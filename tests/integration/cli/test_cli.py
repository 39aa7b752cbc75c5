#!/usr/bin/env python3
"""End-to-end checks of the `moeserve` command line on the embedded default model (preset tiny):
the stable JSON contract of `generate`, text and chat generation, tokenize/detokenize, and clear
errors (exit 2 and a message naming the problem) for bad input. Usage: test_cli.py BIN WORKDIR"""
import json
import os
import shutil
import socket
import subprocess
import sys

BIN, WORK = sys.argv[1], sys.argv[2]
FAILS = []


def run(*args, ok=True):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)
    if ok and p.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def expect_error(args, needle, code=2):
    p = run(*args, ok=False)
    check(p.returncode == code and needle in p.stderr,
          f"error for {' '.join(args[:4])}...: exit {p.returncode}, stderr {p.stderr.strip()[:160]!r}"
          f" should mention {needle!r}")


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    run("mkmodel", "--out", model, "--preset", "tiny", "--seed", "0")

# Raw token mode: exactly N tokens and the logits over the whole vocabulary.
out = json.loads(run("generate", "--model", model, "--prompt-ids", "0,5,17", "--max-new-tokens",
                     "6", "--temperature", "0", "--json").stdout)
check(len(out["tokens"]) == 6, "generate --json returns exactly --max-new-tokens tokens")
check(len(out["logits"]) == 129280, "logits cover the vocabulary")
again = json.loads(run("generate", "--model", model, "--prompt-ids", "0,5,17",
                       "--max-new-tokens", "6", "--temperature", "0", "--json").stdout)
check(again == out, "greedy generation is deterministic across runs")
f32 = json.loads(run("generate", "--model", model, "--prompt-ids", "0,5,17", "--max-new-tokens",
                     "6", "--compute-dtype", "f32", "--json", "--all-logits").stdout)
check(len(f32["step_logits"]) == 6 and f32["step_logits"][0] == f32["logits"],
      "--all-logits gives one logit vector per generated token, the first at the prompt")
best = max(range(len(f32["logits"])), key=lambda i: f32["logits"][i])
check(f32["tokens"][0] == best, "greedy picks the argmax of the reported logits")
seeded = [json.loads(run("generate", "--model", model, "--prompt-ids", "1,2,3", "--max-new-tokens",
                         "8", "--temperature", "1.0", "--seed", s, "--json").stdout)["tokens"]
          for s in ("7", "7", "8")]
check(seeded[0] == seeded[1] and seeded[0] != seeded[2], "sampling is reproducible per seed")
# --backend: the same engine with its steps and experts on a Backend (the path of `--backend
# cuda`); the CPU backend runs the same operations, so the output is identical.
on_backend = json.loads(run("generate", "--model", model, "--prompt-ids", "0,5,17",
                            "--max-new-tokens", "6", "--compute-dtype", "f32", "--json",
                            "--all-logits", "--backend", "cpu:2").stdout)
check(on_backend == f32, "generate --backend cpu:2 equals the host engine exactly")
graphed = json.loads(run("generate", "--model", model, "--prompt-ids", "0,5,17",
                         "--max-new-tokens", "6", "--compute-dtype", "f32", "--json",
                         "--all-logits", "--backend", "cpu:2", "--decode-graphs").stdout)
check(graphed == f32, "generate --backend cpu:2 --decode-graphs (steps replayed) equals it too")

# Tokenizer round trip through the CLI (R1 flavour: <think> is one token).
ids = json.loads(run("tokenize", "--model", model, "--text", "Hi <think>\n", "--json").stdout)["ids"]
check(128798 in ids, "the default model's tokenizer is the R1 flavour (<think> = 128798)")
text = run("detokenize", "--model", model, "--ids", ",".join(map(str, ids)), "--skip-special").stdout
check(text == "Hi <think>\n\n", f"detokenize round trip (text plus a newline): {text!r}")

# Chat: reasoning and answer apart; the thinking budget closes the thought.
chat = json.loads(run("generate", "--model", model, "--prompt", "Why is the sky blue?", "--chat",
                      "--reasoning-effort", "low", "--max-new-tokens", "300", "--temperature",
                      "0.8", "--seed", "1", "--json").stdout)
check({"reasoning_content", "content", "finish_reason", "tokens"} <= set(chat),
      "chat --json has reasoning_content, content, finish_reason")
check(128799 in chat["tokens"][:258], "low effort (256 tokens) closes the reasoning with </think>")
check(chat["text"].startswith(chat["reasoning_content"][:20]),
      "reasoning comes first in the generated text")

# Bad input: exit code 2 and a message that names the problem.
expect_error(["generate", "--model", model, "--prompt-ids", "0,999999", "--json"], "999999")
expect_error(["generate", "--model", model, "--prompt-ids", "0,-3"], "-3")
expect_error(["generate", "--model", model, "--prompt-ids", ",".join(["5"] * 16385)],
             "context")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--compute-dtype", "fp4"], "fp4")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--temperature", "-1"],
             "temperature")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--top-p", "0"], "top_p")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--bogus"], "--bogus")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--backend", "tpu"], "tpu")
expect_error(["generate", "--model", model], "--prompt")
expect_error(["generate", "--model", os.path.join(WORK, "nope"), "--prompt-ids", "1"],
             "config.json")
expect_error(["generate", "--model", model, "--prompt", "x", "--chat", "--reasoning-effort",
              "extreme"], "low")
expect_error(["mkmodel", "--out", os.path.join(WORK, "x"), "--preset", "huge"], "huge")
expect_error(["tokenize", "--model", model, "--text", "a", "--bogus"], "bogus")
expect_error(["detokenize", "--model", model, "--ids", "1,1000000"], "1000000")
expect_error(["up", "--model", model, "--restart-delay-s", "-2"], "--restart-delay-s")
expect_error(["up", "--model", model, "--restart-delay-s", "soon"], "restart-delay-s")
# A backend the workers could not open is refused before any process starts.
expect_error(["up", "--model", model, "--backend", "tpu"], "tpu")
expect_error(["up", "--model", model, "--decode-graphs"], "--backend")
expect_error(["generate", "--model", model, "--prompt-ids", "1", "--decode-graphs"], "--backend")
# A bad expert placement: the shard refuses it at start-up, `up` says which process and stops.
up_dir = os.path.join(WORK, "bad-placement")
shutil.rmtree(up_dir, ignore_errors=True)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
free = str(sock.getsockname()[1])
sock.close()
p = run("up", "--model", model, "--shards", "2", "--placement", "sideways", "--port", free,
        "--run-dir", up_dir, ok=False)
shard_log = open(os.path.join(up_dir, "expert-shard-0.log")).read() if os.path.exists(
    os.path.join(up_dir, "expert-shard-0.log")) else ""
check(p.returncode == 1 and "exited during start-up" in p.stderr and "sideways" in shard_log,
      f"up --placement sideways fails naming the shard ({p.stderr.strip()[-160:]!r}) whose log "
      f"names the spec ({shard_log.strip()[-120:]!r})")

# A damaged checkpoint: truncated data and a missing tensor are named, not crashed on.
bad = os.path.join(WORK, "bad")
shutil.rmtree(bad, ignore_errors=True)
shutil.copytree(model, bad)
with open(os.path.join(bad, "model.safetensors"), "r+b") as f:
    f.truncate(os.path.getsize(os.path.join(bad, "model.safetensors")) - 1000)
p = run("generate", "--model", bad, "--prompt-ids", "1", ok=False)
check(p.returncode != 0 and "model.safetensors" in p.stderr and "Segmentation" not in p.stderr,
      f"truncated checkpoint is a clear error: {p.stderr.strip()[:200]!r}")
cfg_path = os.path.join(bad, "config.json")
cfg = json.load(open(os.path.join(model, "config.json")))
cfg["num_hidden_layers"] = 5
shutil.copy(os.path.join(model, "model.safetensors"), os.path.join(bad, "model.safetensors"))
json.dump(cfg, open(cfg_path, "w"))
p = run("generate", "--model", bad, "--prompt-ids", "1", ok=False)
check(p.returncode != 0 and "model.layers.4" in p.stderr,
      f"a tensor missing for the config is named: {p.stderr.strip()[:200]!r}")

print(f"{sum(1 for _ in FAILS)} failed")
sys.exit(1 if FAILS else 0)
