#!/usr/bin/env python3
"""Graceful drain and overload through `moeserve up` (real processes on loopback, tiny model).

Cluster A (1 prefill, 2 decode workers, --drain-timeout-s 60), greedy streams in flight:
  - SIGTERM a decode worker: its health turns NOT_SERVING, the router stops picking it, every
    accepted stream completes with exactly the tokens of a clean run, the worker exits (0).
  - SIGTERM the gateway: /readyz 503 and gRPC health NOT_SERVING while it drains, a request
    arriving meanwhile gets a clean 503, the streams in flight complete in full, it exits 0.
Cluster B (1 prefill, 1 decode, router --relay-threads 2 --max-queue 1):
  - a flood of concurrent requests: every one is answered, 200 or 429 with Retry-After, some
    429s; afterwards every worker is idle with all its KV blocks free.
  - a gRPC Inference call with a short deadline ends DEADLINE_EXCEEDED and the decode worker
    frees the sequence; X-Request-Timeout does the same over HTTP (504).
  - SIGTERM the router with streams in flight: they complete in full, a new request gets a
    clean 503, the router exits 0.
Usage: test_drain_overload.py BIN_DIR WORKDIR"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BIN, WORK = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, "..", "..", "..", "tools", "node")
PROTO_DIR = os.path.join(HERE, "..", "..", "..", "proto")
MOESERVE = os.path.join(BIN, "moeserve")
FAILS = []
NAME = "tiny"


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


def request(port, path, body=None, headers=None, timeout=300):
    """(status, headers, body text); never raises on an HTTP error status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()
    except (urllib.error.URLError, ConnectionError) as e:
        return 0, {}, str(e)


class Stream(threading.Thread):
    """A greedy streaming chat request; records its events, content and errors."""

    def __init__(self, port, prompt, max_tokens):
        super().__init__(daemon=True)
        self.body = {"model": NAME, "messages": [{"role": "user", "content": prompt}],
                     "max_tokens": max_tokens, "temperature": 0, "stream": True,
                     "stream_options": {"include_usage": True}}
        self.port, self.events, self.error, self.done = port, [], None, False
        self.status = None

    def run(self):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/chat/completions",
                                     data=json.dumps(self.body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                self.status = r.status
                for raw in r:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        self.done = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        self.error = event["error"]
                    self.events.append(event)
        except urllib.error.HTTPError as e:
            self.status, self.error = e.code, e.read().decode()
        except Exception as e:  # noqa: BLE001 - recorded and asserted on
            self.error = repr(e)

    def text(self):
        return "".join((e["choices"][0]["delta"].get("reasoning_content") or "") + "|" +
                       (e["choices"][0]["delta"].get("content") or "")
                       for e in self.events if e.get("choices"))

    def completion_tokens(self):
        usage = [e["usage"] for e in self.events if e.get("usage")]
        return usage[-1]["completion_tokens"] if usage else None


def run_streams(port, prompts, max_tokens, during=None, min_events=3):
    """Starts one stream per prompt; once each has `min_events` events calls during()."""
    streams = [Stream(port, p, max_tokens) for p in prompts]
    for s in streams:
        s.start()
    result = None
    if during is not None:
        for _ in range(3000):
            if all(len(s.events) >= min_events or not s.is_alive() for s in streams):
                break
            time.sleep(0.02)
        result = during()
    for s in streams:
        s.join(300)
    return streams, result


def start_cluster(model, port, extra, run_dir):
    p = subprocess.Popen([MOESERVE, "up", "--model", model, "--port", str(port), "--run-dir",
                          run_dir, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    lines = []
    while True:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "moeserve is up" in line:
            # Keep reading up's output (its children's exit statuses) in the background.
            out = []
            threading.Thread(target=lambda: out.extend(iter(p.stdout.readline, "")),
                             daemon=True).start()
            p.output = out
            return p
    p.kill()
    raise SystemExit("cluster did not start:\n" + "".join(lines))


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append((int(d), open(f"/proc/{d}/cmdline").read().replace("\0", " ")))
        except (OSError, ValueError, IndexError):
            pass
    return out


def alive(pid):
    try:
        os.kill(pid, 0)
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def wait_gone(pid, seconds):
    for _ in range(int(seconds * 20)):
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def exit_status_logged(cluster, name):
    """The raw wait status `up` logged for child `name` (None when not logged)."""
    for _ in range(100):
        for line in cluster.output:
            if f"{name} exited (status " in line:
                return int(line.split("(status ")[1].split(")")[0])
        time.sleep(0.1)
    return None


def health(addr):
    r = subprocess.run(["node", os.path.join(HERE, "grpc_probe.mjs"), NODE_DIR, PROTO_DIR,
                        "health", addr], capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout) if r.returncode == 0 else {"status": None, "error": r.stderr}


def workers(info):
    r = subprocess.run([MOESERVE, "status", "--router", info["router"]], capture_output=True,
                       text=True)
    return json.loads(r.stdout)["workers"] if r.returncode == 0 else []


def all_idle(info, tries=600):
    ws = []
    for _ in range(tries):
        ws = [w for w in workers(info) if w["healthy"]]
        if ws and all(w["running"] == 0 and w.get("waiting", 0) == 0 and
                      w["kv_blocks_free"] == w["kv_blocks_total"] for w in ws):
            return True, ws
        time.sleep(0.1)
    return False, ws


def stop_cluster(p):
    kids = [pid for pid, _ in children_of(p.pid)]
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
    return [pid for pid in kids if alive(pid)]


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                   check=True)

PROMPTS = [f"Story number {i}: once upon a time" for i in range(4)]
TOKENS = 160  # long enough that a drain is still under way while the test probes it

# ---------------------------------------------------------------- cluster A: worker, gateway
port = free_port()
run_dir = os.path.join(WORK, "run-a")
shutil.rmtree(run_dir, ignore_errors=True)
cluster = start_cluster(model, port, ["--prefill", "1", "--decode", "2", "--compute-dtype", "f32",
                                      "--drain-timeout-s", "60"], run_dir)
try:
    info = json.load(open(os.path.join(run_dir, "cluster.json")))
    clean, _ = run_streams(port, PROMPTS, TOKENS)
    reference = [s.text() for s in clean]
    check(all(s.done and s.error is None and s.completion_tokens() == TOKENS for s in clean),
          f"reference streams complete ({[s.completion_tokens() for s in clean]} tokens)")

    # (b) SIGTERM a busy decode worker while 4 streams run on the two.
    decoders = [(pid, cmd) for pid, cmd in children_of(cluster.pid)
                if "moeserve-worker" in cmd and "--role decode" in cmd]
    seen = {}

    def drain_decoder():
        busy = [w for w in workers(info) if w["running"] > 0 and w["address"] in info["decode"]]
        addr = busy[0]["address"] if busy else info["decode"][0]
        victim = [pid for pid, cmd in decoders if f"--port {addr.split(':')[1]} " in cmd + " "][0]
        os.kill(victim, signal.SIGTERM)
        time.sleep(0.2)
        seen["health"] = health(addr)
        seen["router_view"] = [w for w in workers(info) if w["address"] == addr]
        seen["addr"], seen["pid"], seen["busy"] = addr, victim, bool(busy)
        return victim

    streams, victim = run_streams(port, PROMPTS, TOKENS, during=drain_decoder)
    check(seen["busy"], "the drained decode worker was serving streams")
    check(seen["health"]["status"] == "NOT_SERVING" or not alive(victim),
          f"draining decode worker's gRPC health: {seen['health']}")
    check(all(not w["healthy"] for w in seen["router_view"]),
          f"the router stops picking the draining worker: {seen['router_view']}")
    check(all(s.done and s.error is None for s in streams) and
          [s.text() for s in streams] == reference,
          f"every stream in flight completed with the clean run's tokens across a decode "
          f"worker drain ({[s.completion_tokens() for s in streams]} tokens, errors "
          f"{[s.error for s in streams if s.error]})")
    check(wait_gone(victim, 60), "the drained decode worker exited within its drain timeout")
    decode_name = f"decode-{info['decode'].index(seen['addr'])}"
    status = exit_status_logged(cluster, decode_name)
    check(status == 0, f"{decode_name} exited with status 0 (wait status {status})")
    st, _, body = request(port, "/v1/chat/completions", {
        "model": NAME, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8})
    check(st == 200, f"after the drain the other decode worker serves: {st} {body[:100]}")

    # (a) SIGTERM the gateway while 4 streams run.
    gateway = [pid for pid, cmd in children_of(cluster.pid) if "moeserve-gateway" in cmd][0]

    def drain_gateway():
        os.kill(gateway, signal.SIGTERM)
        time.sleep(0.2)
        gh = health(info["grpc"])
        ready = request(port, "/readyz")
        live = request(port, "/healthz")
        late = request(port, "/v1/chat/completions", {
            "model": NAME, "messages": [{"role": "user", "content": "late"}], "max_tokens": 4})
        return ready, live, late, gh

    streams, (ready, live, late, gh) = run_streams(port, PROMPTS, TOKENS, during=drain_gateway)
    check(ready[0] == 503, f"/readyz during the gateway drain: {ready[0]} {ready[2]}")
    check(live[0] == 200, f"/healthz (liveness) during the drain: {live[0]}")
    check(gh["status"] == "NOT_SERVING", f"gateway gRPC health during the drain: {gh}")
    late_msg = json.loads(late[2])["error"]["message"] if late[0] == 503 else late[2]
    check(late[0] == 503 and "shutting down" in late_msg,
          f"a request arriving during the drain gets a clean 503: {late[0]} {late_msg[:90]!r}")
    check(all(s.done and s.error is None for s in streams) and
          [s.text() for s in streams] == reference,
          f"every stream in flight completed in full across the gateway drain "
          f"({[s.completion_tokens() for s in streams]} tokens)")
    check(wait_gone(gateway, 60), "the gateway exited within its drain timeout")
    status = exit_status_logged(cluster, "gateway")
    check(status == 0, f"gateway exited with status 0 (wait status {status})")
finally:
    left = stop_cluster(cluster)
    check(cluster.returncode == 0 and not left,
          f"cluster A stopped cleanly ({cluster.returncode}, left {left})")

# ---------------------------------------------------------------- cluster B: overload, deadlines, router
port = free_port()
run_dir = os.path.join(WORK, "run-b")
shutil.rmtree(run_dir, ignore_errors=True)
cluster = start_cluster(model, port, ["--prefill", "1", "--decode", "1", "--compute-dtype", "f32",
                                      "--relay-threads", "2", "--max-queue", "1",
                                      "--drain-timeout-s", "60"], run_dir)
try:
    info = json.load(open(os.path.join(run_dir, "cluster.json")))
    # Flood: 12 at once against 2 relay threads + 1 queue slot.
    results = [None] * 12

    def one(i):
        results[i] = request(port, "/v1/completions", {
            "model": NAME, "prompt": f"flood {i}", "max_tokens": 24, "temperature": 0,
            "ignore_eos": True}, timeout=300)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(320)
    codes = [r[0] if r else None for r in results]
    rejected = [r for r in results if r and r[0] == 429]
    check(all(c in (200, 429) for c in codes), f"every flooded request answered 200 or 429: {codes}")
    check(len(rejected) > 0, f"some requests beyond the queue bound got 429 ({len(rejected)})")
    check(all(r[1].get("Retry-After", "").isdigit() and
              json.loads(r[2])["error"]["type"] == "rate_limit_error" for r in rejected),
          f"every 429 has Retry-After and an OpenAI rate_limit_error body: "
          f"{[(r[1].get('Retry-After'), r[2][:80]) for r in rejected[:1]]}")
    check(all(json.loads(r[2])["usage"]["completion_tokens"] == 24 for r in results
              if r and r[0] == 200), "every accepted request got all its tokens")
    idle, ws = all_idle(info)
    check(idle, f"after the flood every worker is idle with all KV blocks free: {ws}")

    # gRPC deadline: DEADLINE_EXCEEDED, and the decode worker frees the sequence.
    r = subprocess.run(["node", os.path.join(HERE, "grpc_probe.mjs"), NODE_DIR, PROTO_DIR,
                        "deadline", info["grpc"], NAME, "3000"],
                       capture_output=True, text=True, timeout=120)
    out = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {"err": r.stderr}
    check(out.get("code") == "DEADLINE_EXCEEDED" and out.get("messages", 0) > 0,
          f"gRPC Inference with a 3 s deadline on a 4000-token request: {out}")
    # Left running, the 4000-token sequence would take ~40 s more: look for the free blocks
    # well before that (~15 s), so that a worker that never freed it fails here.
    idle, ws = all_idle(info, tries=150)
    check(idle, f"after the deadline the worker freed the sequence: {ws}")

    # HTTP X-Request-Timeout: 504, sequence freed; a bad value is a 400.
    st, _, body = request(port, "/v1/completions", {
        "model": NAME, "prompt": "a long one", "max_tokens": 4000, "ignore_eos": True},
        headers={"X-Request-Timeout": "2"})
    check(st == 504 and "error" in json.loads(body), f"X-Request-Timeout: 2 -> {st} {body[:100]}")
    idle, ws = all_idle(info, tries=150)
    check(idle, f"after the HTTP timeout the worker freed the sequence: {ws}")
    st, _, body = request(port, "/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 2},
                          headers={"X-Request-Timeout": "soon"})
    check(st == 400, f"X-Request-Timeout: soon -> {st} {body[:100]}")

    # (c) SIGTERM the router while 2 streams run (2 relay threads).
    router = [pid for pid, cmd in children_of(cluster.pid) if "moeserve-router" in cmd][0]
    clean, _ = run_streams(port, PROMPTS[:2], TOKENS)
    reference = [s.text() for s in clean]

    def drain_router():
        os.kill(router, signal.SIGTERM)
        time.sleep(0.2)
        late = request(port, "/v1/chat/completions", {
            "model": NAME, "messages": [{"role": "user", "content": "late"}], "max_tokens": 4})
        return late, health(info["router"])

    streams, (late, rh) = run_streams(port, PROMPTS[:2], TOKENS, during=drain_router)
    check(rh["status"] == "NOT_SERVING", f"router gRPC health during the drain: {rh}")
    late_msg = json.loads(late[2])["error"]["message"] if late[0] == 503 else late[2]
    check(late[0] == 503 and "shutting down" in late_msg,
          f"a request arriving during the router drain gets a clean 503: {late[0]} "
          f"{late_msg[:90]!r}")
    check(all(s.done and s.error is None for s in streams) and
          [s.text() for s in streams] == reference,
          f"every stream in flight completed in full across the router drain "
          f"({[s.completion_tokens() for s in streams]} tokens)")
    check(wait_gone(router, 60), "the router exited within its drain timeout")
    status = exit_status_logged(cluster, "router")
    check(status == 0, f"router exited with status 0 (wait status {status})")
finally:
    left = stop_cluster(cluster)
    check(cluster.returncode == 0 and not left,
          f"cluster B stopped cleanly ({cluster.returncode}, left {left})")

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
