#!/usr/bin/env python3
"""Soak: N minutes of mixed traffic against a real `moeserve up` cluster, watching every process.

  scripts/soak.py --minutes 30 [--bin build/ci/bin] [--work /tmp/moeserve-soak] [--clients 4]

Traffic (CLIENTS threads, seeded): streaming and non-streaming chat, text completions, streams
the client cancels mid-way, short and long prompts, greedy and seeded sampling. Every
--sample-s seconds it reads VmRSS (/proc/PID/status) and the open file descriptors
(/proc/PID/fd) of every process in the cluster (cluster.json's "processes").

Pass/fail, printed as a table and written to WORK/soak-report.json:
  - every request ok or cancelled by the client: none lost, none failed, none truncated
    (a finish_reason, and "length" means all max_tokens came); every greedy answer to a prompt
    equal to the first one (no batch- or cache-dependent drift);
  - no process died or was restarted;
  - memory flat after warm-up: with the samples after warm-up cut in thirds, each process's
    median RSS of the last third is at most max(5%, 8 MiB) above the median of the first third
    (Redis, which holds the cached KV blocks and so grows as the cache fills, is checked against
    its bound instead: RSS at most its 512 MiB maxmemory + 128 MiB);
  - no file-descriptor growth: with the traffic paused, each process holds at most 3 more
    descriptors at the end than at the end of warm-up;
  - at the end, every worker idle with every KV block free (the router's view, `moeserve
    status`), and the KV-cache service with no active lease and none that expired instead of
    being released (its /metrics).
Warm-up is the first max(30 s, 20%) of the run. The 3-minute run (ctest resilience_soak) can
only catch fast leaks; the 30-minute run is the nightly one (tests/README.md)."""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "testing"))
import load_client  # noqa: E402
from moeserve_cluster import free_port, start_cluster, stop  # noqa: E402

WORDS = ("alpha beta gamma delta expert router prefill decode cache token stream latent "
         "attention shard block lease budget sky blue river mountain story number").split()
RSS_MARGIN, RSS_SLACK_KB, FD_SLACK = 0.05, 8 * 1024, 3
REDIS_BOUND_KB = (512 + 128) * 1024


def prompt_text(rng, long):
    n = rng.randint(300, 900) if long else rng.randint(2, 24)
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Traffic:
    def __init__(self, port, clients, seed):
        self.port = port
        self.results = []  # (kind of request, key for greedy comparison or None, Result)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self.idle = [threading.Event() for _ in range(clients)]
        self.threads = [threading.Thread(target=self.run, args=(seed + c, c), daemon=True)
                        for c in range(clients)]
        # A few fixed prompts come back again and again: cache hits, and greedy answers to
        # compare over the whole run.
        rng = random.Random(seed)
        self.fixed = [prompt_text(rng, long=i % 2 == 1) for i in range(6)]

    def one(self, rng):
        kind = rng.choices(["stream", "chat", "completion", "cancel"], [40, 20, 15, 25])[0]
        fixed = rng.random() < 0.5
        text = rng.choice(self.fixed) if fixed else prompt_text(rng, rng.random() < 0.25)
        greedy = fixed or rng.random() < 0.5
        max_tokens = 16 if fixed else rng.randint(4, 64)
        body = {"model": "tiny", "max_tokens": max_tokens, "stream": kind in ("stream", "cancel")}
        if kind == "stream":
            body["stream_options"] = {"include_usage": True}
        if greedy:
            body["temperature"] = 0
        else:
            body.update(temperature=0.8, top_p=0.95, seed=rng.randint(1, 1 << 30))
        if kind == "completion":
            body["prompt"] = text
            r = load_client.chat(self.port, body, timeout=180, path="/v1/completions")
        else:
            body["messages"] = [{"role": "user", "content": text}]
            r = load_client.chat(self.port, body, timeout=180,
                                 cancel_after=rng.randint(1, 6) if kind == "cancel" else None)
        key = (kind == "completion", text, max_tokens) if fixed and kind != "cancel" else None
        return kind, key, max_tokens, r

    def run(self, seed, c):
        rng = random.Random(seed)
        while not self.stopping.is_set():
            if self.paused.is_set():
                self.idle[c].set()
                time.sleep(0.05)
                continue
            self.idle[c].clear()
            kind, key, max_tokens, r = self.one(rng)
            with self.lock:
                self.results.append((kind, key, max_tokens, r))

    def pause(self):
        self.paused.set()
        for e in self.idle:
            e.wait(300)

    def resume(self):
        for e in self.idle:
            e.clear()
        self.paused.clear()


def sample(processes):
    out = {}
    for p in processes:
        out[p["name"]] = (p["pid"], load_client.rss_kb(p["pid"]), load_client.fd_count(p["pid"]))
    return out


def thirds_median(values):
    k = len(values) // 3
    if k == 0:
        return None, None
    return statistics.median(values[:k]), statistics.median(values[-k:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "ci", "bin"))
    ap.add_argument("--work", default="/tmp/moeserve-soak")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sample-s", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.minutes <= 0 or a.clients < 1 or a.sample_s <= 0:
        ap.error("--minutes, --clients and --sample-s must be positive")
    moeserve = os.path.join(a.bin, "moeserve")
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "tiny")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        subprocess.run([moeserve, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
                       check=True)
    run_dir = os.path.join(a.work, "run")
    shutil.rmtree(run_dir, ignore_errors=True)
    port = free_port()
    cluster = start_cluster(moeserve, model, port, run_dir, "--prefill", "2", "--decode", "2",
                            "--shards", "2", "--compute-dtype", "f32")
    fails = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            fails.append(what)

    report = {"minutes": a.minutes, "clients": a.clients}
    try:
        with open(os.path.join(run_dir, "cluster.json")) as f:
            info = json.load(f)
        processes = info["processes"]
        total_s = a.minutes * 60
        warmup_s = max(30.0, 0.2 * total_s)
        traffic = Traffic(port, a.clients, a.seed)
        for t in traffic.threads:
            t.start()
        t0 = time.time()
        while time.time() < t0 + warmup_s:
            time.sleep(a.sample_s)
        traffic.pause()
        time.sleep(2)
        baseline = sample(processes)
        traffic.resume()
        series = {p["name"]: [] for p in processes}
        while time.time() < t0 + total_s:
            for name, (_, rss, _) in sample(processes).items():
                series[name].append(rss)
            time.sleep(a.sample_s)
        traffic.pause()
        time.sleep(3)
        final = sample(processes)
        traffic.stopping.set()
        for t in traffic.threads:
            t.join(300)
        check(not any(t.is_alive() for t in traffic.threads), "every client thread finished")

        # Requests.
        counts = {}
        for kind, _, _, r in traffic.results:
            counts.setdefault(kind, {}).setdefault(r.kind, 0)
            counts[kind][r.kind] += 1
        report["requests"] = counts
        print(f"requests ({len(traffic.results)} in {a.minutes} min): {json.dumps(counts)}")
        # A "cancel" request may finish before the client hangs up; nothing else may be cut.
        bad = [(kind, r) for kind, _, _, r in traffic.results
               if r.kind not in ("ok", "cancelled") or (r.kind == "cancelled") > (kind == "cancel")]
        check(not bad, f"every request answered in full, or cancelled by the client: {bad[:3]}")
        short = [(kind, m, r) for kind, _, m, r in traffic.results
                 if r.kind == "ok" and r.finish == "length" and r.usage
                 and r.usage.get("completion_tokens") != m]
        check(not short, f"finish_reason length means max_tokens tokens: {short[:3]}")
        first = {}
        drift = []
        for _, key, _, r in traffic.results:
            if key is None or r.kind != "ok":
                continue
            if first.setdefault(key, r.text) != r.text:
                drift.append((key[1][:30], r.text[:40], first[key][:40]))
        check(not drift, f"greedy answers to the repeated prompts never changed "
                         f"({len(first)} prompts): {drift[:2]}")

        # Processes.
        rows = []
        for p in processes:
            name = p["name"]
            pid0, rss0, fd0 = baseline[name]
            pid1, rss1, fd1 = final[name]
            alive = rss1 is not None
            first_med, last_med = thirds_median([v for v in series[name] if v is not None])
            allowed = None if first_med is None else max(first_med * RSS_MARGIN, RSS_SLACK_KB)
            rows.append({"name": name, "pid": p["pid"], "alive": alive, "rss_kb_idle_start": rss0,
                         "rss_kb_idle_end": rss1, "rss_kb_first_third_median": first_med,
                         "rss_kb_last_third_median": last_med, "rss_kb_allowed_growth": allowed,
                         "fds_idle_start": fd0, "fds_idle_end": fd1})
            check(alive, f"{name} (pid {p['pid']}) still running")
            if name == "redis":
                # Redis holds the KV blocks, so it grows as the cache fills: it must stay within
                # its --maxmemory (512 MiB, set by `moeserve up`) plus allocator overhead.
                peak = max([v for v in series[name] if v is not None] or [0])
                check(peak <= REDIS_BOUND_KB,
                      f"redis RSS within its bound: peak {peak / 1024:.1f} MiB <= "
                      f"{REDIS_BOUND_KB // 1024} MiB")
            elif first_med is not None and last_med is not None:
                check(last_med <= first_med + allowed,
                      f"{name} RSS flat after warm-up: median {first_med / 1024:.1f} MiB -> "
                      f"{last_med / 1024:.1f} MiB (allowed +{allowed / 1024:.1f} MiB)")
            if fd0 is not None and fd1 is not None:
                check(fd1 <= fd0 + FD_SLACK, f"{name} file descriptors idle {fd0} -> {fd1}")
        report["processes"] = rows
        with open(os.path.join(run_dir, "cluster.json")) as f:
            now = json.load(f)["processes"]
        check(all(p["restarts"] == 0 and p["pid"] > 0 for p in now),
              "no process died or was restarted")

        # KV blocks and leases.
        ws = []
        for _ in range(100):
            r = subprocess.run([moeserve, "status", "--router", info["router"]],
                               capture_output=True, text=True, timeout=30)
            ws = json.loads(r.stdout)["workers"] if r.returncode == 0 else []
            if ws and all(w["healthy"] and w["running"] == 0 and w["waiting"] == 0 and
                          w["kv_blocks_free"] == w["kv_blocks_total"] for w in ws):
                break
            time.sleep(0.2)
        report["workers"] = ws
        check(bool(ws) and all(w["healthy"] and w["running"] == 0 and w["waiting"] == 0 and
                               w["kv_blocks_free"] == w["kv_blocks_total"] for w in ws),
              f"every worker idle with every KV block free: {ws}")
        kv_address = next(m["address"] for m in info["metrics"] if m["name"] == "kvcache")
        kv = load_client.metrics(kv_address)
        leases = kv.get("moeserve_kvcache_active_leases")
        expired = kv.get("moeserve_kvcache_expired_leases_total")
        report["kvcache"] = {k: v for k, v in kv.items() if k.startswith("moeserve_kvcache_") and
                             "_bucket" not in k and "store_seconds" not in k}
        check(leases == 0, f"KV-cache service: no active lease ({leases})")
        check(expired == 0, f"KV-cache service: no lease expired instead of released ({expired})")
        check(kv.get("moeserve_kvcache_published_blocks_total", 0) > 0 and
              kv.get("moeserve_kvcache_fetched_blocks_total", 0) > 0,
              "the KV cache was used (blocks published and fetched)")

        print("\nprocess | RSS MiB 1st third | RSS MiB last third | fds idle start | fds idle end")
        print("---|---|---|---|---")
        for row in rows:
            f_, l_ = row["rss_kb_first_third_median"], row["rss_kb_last_third_median"]
            print(f"{row['name']} | {f_ / 1024 if f_ else 0:.1f} | {l_ / 1024 if l_ else 0:.1f} | "
                  f"{row['fds_idle_start']} | {row['fds_idle_end']}")
    finally:
        stop(cluster)
        if cluster.returncode != 0:
            fails.append(f"moeserve up exited with {cluster.returncode}")
        report["failures"] = fails
        with open(os.path.join(a.work, "soak-report.json"), "w") as f:
            json.dump(report, f, indent=1)
    print(f"{len(fails)} failed; report in {os.path.join(a.work, 'soak-report.json')}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
