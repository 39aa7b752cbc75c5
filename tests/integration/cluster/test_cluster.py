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

for compute, shards in (("f32", "2"), ("bf16", "1")):
    port = free_port()
    run_dir = os.path.join(WORK, f"run-{compute}")
    shutil.rmtree(run_dir, ignore_errors=True)
    cluster = start_cluster(model, port, ["--prefill", "1", "--decode", "2", "--shards", shards,
                                          "--compute-dtype", compute], run_dir)
    try:
        status, body = post(port, "/v1/completions", {
            "model": name, "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0})
        check(status == 200, f"[{compute}] completion served: {status} {body[:200]}")
        got = json.loads(body)["choices"][0]["text"] if status == 200 else None
        ref = json.loads(subprocess.run(
            [MOESERVE, "generate", "--model", model, "--prompt", "The quick brown fox",
             "--max-new-tokens", "16", "--temperature", "0", "--compute-dtype", compute, "--json"],
            capture_output=True, text=True, check=True).stdout)["text"]
        check(got == ref, f"[{compute}] cluster ({shards} shard(s), prefill and decode apart) "
                          f"equals single-process generate: {got!r} vs {ref!r}")

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
    finally:
        left = stop_cluster(cluster)
        check(cluster.returncode == 0, f"[{compute}] moeserve up exited cleanly ({cluster.returncode})")
        check(not left, f"[{compute}] no process left behind: {left}")
        if FAILS:
            print(logs(run_dir))

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
