#!/usr/bin/env python3
"""Chaos under load on loopback: a real cluster through `moeserve up` (2 prefill + 2 decode
workers, 3 expert shards, the KV-cache service, Redis, the router, the gateway), a steady load of
concurrent greedy streaming clients, and then, in turn, kill -9 of one process at a time: a decode
worker, a prefill worker, an expert shard whose experts have a copy on another shard, an expert
shard whose experts have none, the KV-cache service, Redis and the router. `moeserve up
--restart-delay-s 2` restarts each killed process with its own argv (as a supervisor would).
Then an expert shard hangs instead of dying (SIGSTOP for HANG_S seconds, then SIGCONT), one with
a copy of its experts and one without: the kernel still accepts connections to a stopped process
and nothing answers, so only the workers' liveness pings notice it.

For every fault it reports requests accepted, completed, failed with a clean error, lost,
mismatched (tokens that differ from the clean run: duplicated or otherwise) and the recovery
time, and asserts: lost == 0, mismatched == 0, every failure is a clean error (an OpenAI error
body or an SSE error event; the text streamed before it a prefix of the clean run's), and the
cluster serves again after the restart (a request succeeds; every worker healthy again; after a
KV-cache or Redis restart, a repeated prompt is a cache hit again). Faults that must cost nothing
(decode and prefill workers, the shard with a copy, the KV cache, Redis) must fail no request.
A hung shard must not hang requests: while it is still stopped, requests complete on the copy
(with one) or fail cleanly (without), and after SIGCONT it serves again.
Recovery times (for a hang: from SIGCONT) are printed, never asserted.
Usage: test_chaos.py BIN_DIR WORKDIR"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "testing"))
import load_client  # noqa: E402
from moeserve_cluster import FAILS, check, free_port, start_cluster, stop  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
MOESERVE = os.path.join(BIN, "moeserve")
CLIENTS = 4
MAX_TOKENS = 40  # long enough that the decode worker picked as busy still is when killed
RESTART_DELAY_S = 2
HANG_S = 12  # how long a hung shard stays stopped: longer than the workers' liveness bound (~4 s)
# Experts 0-15 of every MoE layer on shards 0 and 1 (each a copy of the other), 16-31 only on 2.
PLACEMENT = "explicit,0-15@0,0-15@1,16-31@2"
PROMPTS = [
    "Tell me a story.",
    "Why is the sky blue? " * 30,
    "List three prime numbers.",
    "Explain the MoE architecture in detail. " * 20,
    "Hello!",
    "Summarize: " + "the quick brown fox jumps over the lazy dog. " * 25,
]
# (fault: "kill -9" or "hang" (SIGSTOP, then SIGCONT), label, process name in cluster.json,
#  failures allowed: False = must cost no request)
FAULTS = [
    ("kill -9", "decode worker", "decode-busy", False),  # the one with streams on it
    ("kill -9", "prefill worker", "prefill-0", False),
    ("kill -9", "expert shard with a copy", "expert-shard-0", False),
    ("kill -9", "expert shard without a copy", "expert-shard-2", True),
    ("kill -9", "KV-cache service", "kvcache", False),
    ("kill -9", "Redis", "redis", False),
    ("kill -9", "router", "router", True),
    ("hang", "expert shard with a copy", "expert-shard-0", False),
    ("hang", "expert shard without a copy", "expert-shard-2", True),
]


def body(i, stream=True, max_tokens=MAX_TOKENS):
    return {"model": "tiny", "messages": [{"role": "user", "content": PROMPTS[i]}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}


def read_info(run_dir):
    with open(os.path.join(run_dir, "cluster.json")) as f:
        return json.load(f)


def process(run_dir, name):
    return next(p for p in read_info(run_dir)["processes"] if p["name"] == name)


def workers(info):
    r = subprocess.run([MOESERVE, "status", "--router", info["router"]], capture_output=True,
                       text=True, timeout=30)
    try:
        return json.loads(r.stdout)["workers"]
    except (ValueError, KeyError):
        return []


def workers_healthy(info):
    ws = workers(info)
    return len(ws) == 4 and all(w["healthy"] for w in ws)


def busy_decode_worker(info):
    """The name of the decode worker with the most streams running on it (decode-0 if none)."""
    for _ in range(100):
        busy = [w for w in workers(info) if w["address"] in info["decode"] and w["running"] > 0]
        if busy:
            w = max(busy, key=lambda w: w["running"])
            return f"decode-{info['decode'].index(w['address'])}"
        time.sleep(0.02)
    return "decode-0"


class Load:
    """CLIENTS threads, each sending greedy streaming requests back to back over the prompts."""

    def __init__(self, port):
        self.port = port
        self.results = []  # (prompt index, Result)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(c,), daemon=True)
                        for c in range(CLIENTS)]

    def run(self, client):
        n = client
        while not self.stopping.is_set():
            i = n % len(PROMPTS)
            r = load_client.chat(self.port, body(i), timeout=120)
            with self.lock:
                self.results.append((i, r))
            n += CLIENTS
            if r.kind != "ok":
                time.sleep(0.05)  # as a client would before retrying

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self, timeout=180):
        self.stopping.set()
        deadline = time.time() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.time()))
        return [t for t in self.threads if t.is_alive()]


def classify(results, clean):
    """Counts for one window of results."""
    n = {"accepted": 0, "completed": 0, "clean_error": 0, "lost": 0, "mismatched": 0,
         "refused": 0}
    examples = []
    for i, r in results:
        if r.kind == "refused":
            n["refused"] += 1
            continue
        n["accepted"] += 1
        if r.kind == "ok":
            n["completed"] += 1
            if r.text != clean[i]:
                n["mismatched"] += 1
                examples.append(f"prompt {i}: {r.text!r} vs clean {clean[i]!r}")
        elif r.kind == "error":
            n["clean_error"] += 1
            if not clean[i].startswith(r.text):
                n["mismatched"] += 1
                examples.append(f"prompt {i} (failed): streamed {r.text!r} before the error; "
                                f"clean {clean[i]!r}")
        else:
            n["lost"] += 1
            examples.append(f"prompt {i}: lost: {r}")
    return n, examples


def probe_ok(port):
    r = load_client.chat(port, body(0, stream=False, max_tokens=4), timeout=60)
    return r.kind == "ok"


CACHED = {"model": "tiny", "messages": [{"role": "user", "content": "cache me if you can. " * 30}],
          "max_tokens": 2, "temperature": 0, "stream": False}


def cache_hits(port):
    r = load_client.chat(port, CACHED, timeout=60)
    return r.usage.get("prompt_cache_hit_tokens", -1) if r.kind == "ok" else -1


def full_hit_again(port, want, tries=4):
    """The prompt cached before the fault is a full cache hit again within a few requests (the
    first after a Redis restart finds the blocks gone, the next stores them again)."""
    seen = []
    for _ in range(tries):
        seen.append(cache_hits(port))
        if seen[-1] == want:
            return True, seen
    return False, seen


def counter(info, name, series):
    address = next(m["address"] for m in info["metrics"] if m["name"] == name)
    try:
        return load_client.metrics(address).get(series, 0.0)
    except OSError:
        return None


def prefill_tokens(info, name):
    """Prompt tokens a worker has computed (its prefill phase), or None when it cannot be read."""
    address = next(m["address"] for m in info["metrics"] if m["name"] == name)
    try:
        series = load_client.metrics(address)
    except OSError:
        return None
    return sum(v for k, v in series.items()
               if k.startswith("moeserve_worker_computed_tokens_total{") and 'phase="prefill"' in k)


def log_count(run_dir, names, text):
    n = 0
    for name in names:
        with open(os.path.join(run_dir, name + ".log"), errors="replace") as f:
            n += f.read().count(text)
    return n


def log_has(run_dir, names, text):
    return log_count(run_dir, names, text) > 0


WORKERS = ["prefill-0", "prefill-1", "decode-0", "decode-1"]


os.makedirs(WORK, exist_ok=True)
model = os.path.join(WORK, "tiny")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                   check=True)
port = free_port()
run_dir = os.path.join(WORK, "run")
shutil.rmtree(run_dir, ignore_errors=True)
t_start = time.time()
cluster = start_cluster(MOESERVE, model, port, run_dir, "--prefill", "2", "--decode", "2",
                        "--shards", "3", "--placement", PLACEMENT, "--compute-dtype", "f32",
                        "--restart-delay-s", str(RESTART_DELAY_S))
print(f"cluster up in {time.time() - t_start:.1f} s", flush=True)
rows = []
try:
    info = read_info(run_dir)
    # The clean run: each prompt once, nothing failing.
    clean = {}
    for i in range(len(PROMPTS)):
        r = load_client.chat(port, body(i), timeout=120)
        check(r.kind == "ok" and r.text, f"clean run of prompt {i}: {r}")
        clean[i] = r.text
    cache_hits(port)
    full = cache_hits(port)
    check(full > 0, f"a repeated long prompt is a cache hit ({full} tokens)")
    load = Load(port)
    load.start()
    time.sleep(3)
    for fault, label, name, may_fail in FAULTS:
        if name == "decode-busy":
            name = busy_decode_worker(info)
        before = process(run_dir, name)
        migrations = counter(info, "router", "moeserve_router_migrations_total")
        retries = counter(info, "router", 'moeserve_router_retries_total{phase="prefill"}')
        tag = f"{fault} {label}"
        # The workers' log line when they take a (dead or hung) expert shard out of service.
        out_of_service = (f"taking expert shard {name[-1]} at 127.0.0.1:{before['port']} "
                          f"out of service")
        taken_out = log_count(run_dir, WORKERS, out_of_service)
        other_prefill = prefill_tokens(info, "prefill-1") if name == "prefill-0" else None
        other_prefill_down = None
        with load.lock:
            first = len(load.results)
        t_kill = time.time()
        during = None
        if fault == "hang":
            os.kill(before["pid"], signal.SIGSTOP)
            time.sleep(HANG_S)
            with load.lock:
                # What ended while the shard was stopped (after the first second of it).
                during = [r for _, r in load.results[first:] if r.t1 > t_kill + 1]
            t_cont = time.time()
            os.kill(before["pid"], signal.SIGCONT)
            back = True
        else:
            os.kill(before["pid"], signal.SIGKILL)
            # Wait for `up` to restart it, then for the cluster to serve again.
            restarted = None
            while time.time() < t_kill + 60:
                p = process(run_dir, name)
                if p["restarts"] == before["restarts"] + 1 and p["pid"] > 0:
                    restarted = p
                    break
                if name == "prefill-0":  # what prefill-1 computed while prefill-0 was down
                    other_prefill_down = prefill_tokens(info, "prefill-1")
                time.sleep(0.05)
            check(restarted is not None, f"[{tag}] `moeserve up` restarted {name}")
            back = restarted is not None and load_client.wait_port(restarted["port"], 60)
            check(back, f"[{tag}] {name} listens again on port {before['port']}")
        t_back = time.time()
        served = False
        while back and time.time() < t_back + 90:
            if probe_ok(port):
                served = True
                break
            time.sleep(0.1)
        recovery = time.time() - (t_cont if fault == "hang" else t_kill)
        check(served, f"[{tag}] a request after the {'SIGCONT' if fault == 'hang' else 'restart'} "
                      f"succeeds")
        healthy = False
        while time.time() < t_back + 90:
            if workers_healthy(info):
                healthy = True
                break
            time.sleep(0.2)
        check(healthy, f"[{tag}] the router lists all 4 workers healthy again")
        time.sleep(1)  # every client's channel to the restarted peer reconnects (backoff <= 1 s)
        if fault == "hang":
            p = process(run_dir, name)
            check(p["pid"] == before["pid"] and p["restarts"] == before["restarts"],
                  f"[{tag}] {name} was not restarted (it only hung)")
            # Requests did not wait for the shard: while it was still stopped they completed on
            # the copy (or failed cleanly without one).
            ended = [r for r in during if r.kind in ("ok", "error")]
            if may_fail:
                check(any(r.kind == "error" for r in during),
                      f"[{tag}] requests failed cleanly while the shard was stopped "
                      f"({len(during)} ended: {sorted({r.kind for r in during})})")
            else:
                check(any(r.kind == "ok" for r in during),
                      f"[{tag}] requests completed on the copy while the shard was stopped "
                      f"({len(during)} ended: {sorted({r.kind for r in during})})")
            check(len(ended) == len(during), f"[{tag}] nothing lost while the shard was stopped")
            after = log_count(run_dir, WORKERS, out_of_service)
            check(after > taken_out, f"[{tag}] the workers took the hung shard out of service "
                                     f"(worker logs: {taken_out} -> {after})")
        if fault == "kill -9" and name in ("kvcache", "redis"):
            ok, seen = full_hit_again(port, full)
            check(ok, f"[{tag}] after the restart the prompt cached before is a full cache hit "
                      f"({full} tokens) again within 4 requests: {seen}")
        if name.startswith("decode-"):
            after = counter(info, "router", "moeserve_router_migrations_total")
            check(None not in (after, migrations) and after > migrations,
                  f"[{tag}] streams on it migrated ({migrations} -> {after})")
        if name == "prefill-0":
            # A prefill in flight on it at the kill is retried on prefill-1; when none was, the
            # router's health poll takes it out before one is sent, and prefill-1 does them all.
            after = counter(info, "router", 'moeserve_router_retries_total{phase="prefill"}')
            retried = None not in (after, retries) and after > retries
            took_over = (None not in (other_prefill, other_prefill_down)
                         and other_prefill_down > other_prefill)
            check(retried or took_over,
                  f"[{tag}] prefills retried elsewhere ({retries} -> {after}) or done by "
                  f"prefill-1 while prefill-0 was down ({other_prefill} -> {other_prefill_down} "
                  f"prompt tokens)")
        if fault == "kill -9" and name == "expert-shard-0":
            check(log_has(run_dir, ["prefill-0", "prefill-1", "decode-0", "decode-1"],
                          f"taking expert shard 0 at 127.0.0.1:{before['port']} out of service"),
                  f"[{tag}] the workers failed over to the copy on shard 1 (worker logs)")
        time.sleep(1)  # steady load with the restarted process in service
        with load.lock:
            window = load.results[first:]
        # The window: every request that ended after the fault (so also those in flight at it).
        rows.append((tag, name, may_fail, window, recovery))
    stuck = load.stop()
    check(not stuck, f"every client got an answer in the end ({len(stuck)} stuck)")

    print("\nfault | accepted | completed | clean error | lost | mismatched | recovery s")
    print("---|---|---|---|---|---|---")
    for tag, name, may_fail, window, recovery in rows:
        n, examples = classify(window, clean)
        print(f"{tag} ({name}) | {n['accepted']} | {n['completed']} | "
              f"{n['clean_error']} | {n['lost']} | {n['mismatched']} | {recovery:.1f}")
        for e in examples[:5]:
            print("    " + e)
        errors = sorted({r.error[:100] for _, r in window if r.kind == "error"})
        for e in errors[:3]:
            print(f"    clean error: {e}")
        check(n["lost"] == 0, f"[{tag}] no request lost")
        check(n["mismatched"] == 0, f"[{tag}] no duplicated or changed tokens")
        check(n["refused"] == 0, f"[{tag}] the gateway accepted every request")
        check(n["completed"] > 0, f"[{tag}] requests completed during the fault window")
        if not may_fail:
            check(n["clean_error"] == 0, f"[{tag}] costs no request (retried, migrated or "
                                         f"failed over)")
    everything, _ = classify(load.results, clean)
    print(f"total: {everything}", flush=True)
finally:
    stop(cluster)
    check(cluster.returncode == 0, f"moeserve up exited cleanly ({cluster.returncode})")
    if FAILS:
        for fname in sorted(os.listdir(run_dir)):
            if fname.endswith(".log"):
                with open(os.path.join(run_dir, fname), errors="replace") as f:
                    print(f"--- {fname}\n" + f.read()[-1500:])

print(f"{len(FAILS)} failed; {time.time() - t_start:.0f} s")
sys.exit(1 if FAILS else 0)
