#!/usr/bin/env python3
"""API keys end to end: a keys file made with `moeserve keys add`, a real cluster (`moeserve up
--api-keys`), and a second router with one relay slot behind a second gateway (priorities and
SSE keep-alives); driven by the official OpenAI Node SDK and @grpc/grpc-js (api_keys_sdk.mjs).
Usage: test_api_keys.py BIN_DIR WORKDIR"""
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "chat_ui"))
from cluster import FAILS, Cluster, check, free_port  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
NODE_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tools", "node"))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "proto"))
MOESERVE = os.path.join(BIN, "moeserve")
PRICE = {"input_cache_hit_per_million": 0.5, "input_cache_miss_per_million": 3.25,
         "output_per_million": 12.0}


def make_keys_file(path):
    """Tiers written by hand, keys added with `moeserve keys add` (which keeps only hashes)."""
    with open(path, "w") as f:
        json.dump({"tiers": {"std": {}, "low": {"priority": 10},
                             "rpm": {"requests_per_minute": 2},
                             "tpm": {"tokens_per_minute": 40},
                             "day": {"requests_per_day": 1}, "ops": {}},
                   "keys": []}, f)
    keys = {}
    for name, tier, admin in (("alice", "std", False), ("batch", "low", False),
                              ("rpm", "rpm", False), ("tpm", "tpm", False),
                              ("day", "day", False), ("ops", "ops", True)):
        r = subprocess.run([MOESERVE, "keys", "add", "--file", path, "--name", name, "--tier",
                            tier] + (["--admin"] if admin else []),
                           capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.startswith("sk-"),
              f"moeserve keys add {name}: {r.stderr.strip()[:200]}")
        keys[name] = r.stdout.strip()
    text = open(path).read()
    stored = json.loads(text)["keys"]
    check(all(k not in text for k in keys.values()) and
          [e["sha256"] for e in stored] ==
          [hashlib.sha256(k.encode()).hexdigest() for k in keys.values()],
          "the keys file holds SHA-256 hashes only, never a key")
    h = subprocess.run([MOESERVE, "keys", "hash", "--key", "sk-example"], capture_output=True,
                       text=True).stdout.strip()
    check(h == hashlib.sha256(b"sk-example").hexdigest(), "moeserve keys hash prints SHA-256 hex")
    dup = subprocess.run([MOESERVE, "keys", "add", "--file", path, "--name", "alice", "--tier",
                          "std"], capture_output=True, text=True)
    check(dup.returncode == 2 and "duplicate name" in dup.stderr and open(path).read() == text,
          "a duplicate name is refused and leaves the file unchanged")
    return keys


def wait_port(port, proc, what):
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def start_queued_path(cluster, keys_file):
    """A router with one relay slot (so requests queue by priority) and a gateway in front of it
    with keep-alive comments every 0.2 s, over the cluster's workers."""
    rport, mport, gport = free_port(), free_port(), free_port()
    router = subprocess.Popen(
        [os.path.join(BIN, "moeserve-router"), "--host", "127.0.0.1", "--port", str(rport),
         "--prefill", ",".join(cluster.info["prefill"]), "--decode",
         ",".join(cluster.info["decode"]), "--relay-threads", "1", "--metrics-port", str(mport)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(rport, router, "the one-slot router")
    gateway = subprocess.Popen(
        [os.path.join(BIN, "moeserve-gateway"), "--model", cluster.model, "--host", "127.0.0.1",
         "--port", str(gport), "--grpc-port", "0", "--router", f"127.0.0.1:{rport}",
         "--api-keys", keys_file, "--sse-keepalive-s", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(gport, gateway, "the second gateway")
    return [gateway, router], f"http://127.0.0.1:{gport}/v1", f"127.0.0.1:{mport}"


def cost(usage):
    hit = usage["cached"]
    return (hit * PRICE["input_cache_hit_per_million"] +
            (usage["prompt"] - hit) * PRICE["input_cache_miss_per_million"] +
            usage["completion"] * PRICE["output_per_million"]) / 1e6


def check_auth(o):
    if "sdk_error" in o:
        return check(False, f"auth: {o['sdk_error']}")
    for key in ("no_key", "wrong_key", "models_no_key"):
        e = o[key]
        check(e is not None and e["name"] == "AuthenticationError" and e["status"] == 401 and
              e["code"] == "invalid_api_key", f"{key} -> 401 AuthenticationError: {e}")
    check(o["no_key_sent_authorization"] is None, "the no-key client sent no Authorization")
    check("provide an API key" in (o["no_key"] or {}).get("message", ""),
          "no key: the message says a key is needed")
    check(o["models"] == ["tiny"] and o["ok_usage"]["completion_tokens"] == 4 and
          o["stream_usage"]["completion_tokens"] == 4,
          f"a good key is served (models, chat, stream): {o['ok_usage']}")
    check(o["prices_status"] == 200, "GET /v1/prices needs no key")


def check_quotas(o):
    if "sdk_error" in o:
        return check(False, f"quotas: {o['sdk_error']}")

    def limited(e, what, most):
        ra = e and e["retry_after"]
        check(e is not None and e["name"] == "RateLimitError" and e["status"] == 429 and
              e["code"] == "rate_limit_exceeded" and what in e["message"] and
              ra is not None and ra.isdigit() and 1 <= int(ra) <= most,
              f"{what} quota -> 429 RateLimitError with Retry-After in [1, {most}]: {e}")

    check(o["rpm_ok"] == [4, 4], "the first 2 requests of a 2-RPM key are served")
    limited(o["rpm_third"], "requests per minute", 60)
    check(o["rpm_grpc"]["code"] == 8 and "requests per minute" in o["rpm_grpc"]["details"],
          f"the same key over quota on gRPC -> RESOURCE_EXHAUSTED: {o['rpm_grpc']}")
    u = o["tpm_first_usage"]
    check(u["prompt_tokens"] + u["completion_tokens"] >= 40,
          f"the first request of a 40-TPM key used {u['prompt_tokens']}+"
          f"{u['completion_tokens']} tokens")
    limited(o["tpm_second"], "tokens per minute", 60)
    limited(o["day_second"], "requests per day", 86400)


def check_grpc(o):
    if "sdk_error" in o:
        return check(False, f"grpc: {o['sdk_error']}")
    check(o["no_key"]["code"] == 16 and o["wrong_key"]["code"] == 16 and o["list_no_key"] == 16,
          f"gRPC without / with a wrong key -> UNAUTHENTICATED: {o['no_key']} {o['wrong_key']}")
    check(o["ok"]["code"] == 0 and o["ok"]["usage"]["completion_tokens"] == 4,
          f"gRPC with a good key is served: {o['ok']}")


def check_admin(o, seen, keys):
    if "sdk_error" in o:
        return check(False, f"admin: {o['sdk_error']}")
    check(o["no_key"]["status"] == 401 and o["not_admin"]["status"] == 403,
          f"/admin/usage: no key 401, a non-admin key 403 ({o['not_admin']['body']})")
    body = o["admin"]["body"]
    check(o["admin"]["status"] == 200 and body["currency"] == "USD" and
          [r["name"] for r in body["data"]] == list(keys),
          "/admin/usage lists every key for an admin key")
    rows = {r["name"]: r for r in body["data"]}
    for name, usages in seen.items():
        r = rows[name]
        want = {"requests": len(usages), "prompt_tokens": sum(u["prompt"] for u in usages),
                "cached_prompt_tokens": sum(u["cached"] for u in usages),
                "completion_tokens": sum(u["completion"] for u in usages)}
        got = {k: r[k] for k in want}
        want_cost = sum(cost(u) for u in usages)
        check(got == want and abs(r["cost"] - want_cost) <= 1e-12 + 1e-9 * want_cost,
              f"/admin/usage for {name} equals what the clients saw: {got} vs {want}, "
              f"cost {r['cost']:.9f} vs {want_cost:.9f} from the price table")
    check(rows["alice"]["cached_prompt_tokens"] > 0,
          "alice's repeated prompt was served from the KV cache (cache-hit prices priced)")
    check(rows["rpm"]["rate_limited"] == 2 and rows["tpm"]["rate_limited"] == 1 and
          rows["day"]["rate_limited"] == 1 and rows["day"]["requests_today"] == 1,
          "/admin/usage counts refusals (HTTP and gRPC) and today's requests")


def check_priority(o):
    if "sdk_error" in o:
        return check(False, f"priority: {o['sdk_error']}")
    check(o["queued_before_release"] == 4, "4 requests waited behind the one busy relay slot")
    check(o["order"] == ["normal", "low", "low-asks-high", "polite"],
          f"queued requests start by priority (the tier's, or a lower one the request asks "
          f"for), ties in arrival order, and a key cannot ask above its tier: {o['order']}")
    for name, s in o["streams"].items():
        check(s["error"] is None and s["chunks"] >= 2 and s["done_marker"] and
              s["keepalives_before_data"] >= 1,
              f"{name}: {s['keepalives_before_data']} keep-alive comment(s) before the first "
              f"token, then the SDK read the stream to [DONE] ({s['chunks']} chunks, "
              f"error {s['error']})")


os.makedirs(WORK, exist_ok=True)
keys_file = os.path.join(WORK, "keys.json")
price_file = os.path.join(WORK, "prices.json")
with open(price_file, "w") as f:
    json.dump({"currency": "USD", "models": {"*": PRICE}}, f)
keys = make_keys_file(keys_file)
cluster = Cluster(BIN, WORK, "keys", ["--api-keys", keys_file, "--price-table", price_file])
extra = []
try:
    extra, queued_url, router_metrics = start_queued_path(cluster, keys_file)
    cfg = {"node_dir": NODE_DIR, "proto_dir": PROTO_DIR, "model": "tiny",
           "url": cluster.url + "/v1", "grpc": cluster.info["grpc"], "queued_url": queued_url,
           "router_metrics": router_metrics, "keys": keys}
    r = subprocess.run(["node", os.path.join(HERE, "api_keys_sdk.mjs"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"api_keys_sdk.mjs failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout)
    check_auth(out["auth"])
    check_quotas(out["quotas"])
    check_grpc(out["grpc"])
    check_admin(out["admin"], out["seen"], keys)
    check_priority(out["priority"])
finally:
    for p in extra:
        p.terminate()
        p.wait(timeout=30)
    cluster.stop()

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
