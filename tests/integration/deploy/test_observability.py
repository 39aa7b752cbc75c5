#!/usr/bin/env python3
"""Metrics, dashboards and rules against a live cluster, with the real tools: starts `moeserve up`
(2 expert shards, a price table) and Debian's `prometheus` scraping every service every second
with deploy/'s rules loaded; drives traffic (chat with an API key, streamed completions, a stream
the client abandons, bad requests); then
  - `promtool check metrics` passes on every service's /metrics;
  - Prometheus scrapes every service (up == 1);
  - every PromQL expression of the dashboards and rules evaluates and returns data (an alert's
    quantity must return data; the whole alert expression must evaluate);
  - the gateway's counters agree with the responses (cost of the hashed key at the table's
    prices, cancellations, answer tokens) and /v1/prices serves the table.
Usage: test_observability.py BIN_DIR WORKDIR"""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import promql_exprs as px  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
MOESERVE = os.path.join(BIN, "moeserve")
FAILS = []
API_KEY = "sk-observability-test"
PRICES = {"currency": "EUR", "models": {
    "*": {"input_cache_hit_per_million": 1, "input_cache_miss_per_million": 2,
          "output_per_million": 3},
    "tiny": {"input_cache_hit_per_million": 0.5, "input_cache_miss_per_million": 4,
             "output_per_million": 16}}}


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what + ("" if cond or not detail else "\n" + detail),
          flush=True)
    if not cond:
        FAILS.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(url, body=None, headers=None, timeout=120):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(predicate, seconds, step=0.5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(step)
    return predicate()


def logs(run_dir):
    out = []
    for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
        if name.endswith(".log"):
            with open(os.path.join(run_dir, name), errors="replace") as f:
                out.append(f"--- {name}\n" + f.read()[-1500:])
    return "\n".join(out)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
model = os.path.join(WORK, "tiny")
subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny", "--seed", "0"],
               check=True, stdout=subprocess.DEVNULL)
prices_path = os.path.join(WORK, "prices.json")
with open(prices_path, "w") as f:
    json.dump(PRICES, f)
run_dir = os.path.join(WORK, "run")
port = free_port()
# A one-second resume grace: the stream abandoned below is cancelled (and counted) soon after.
up = subprocess.Popen([MOESERVE, "up", "--model", model, "--port", str(port), "--run-dir", run_dir,
                       "--shards", "2", "--price-table", prices_path,
                       "--stream-resume-grace-s", "1"],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
prom = None
try:
    started = time.time()
    lines = []
    while time.time() - started < 300:
        line = up.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "moeserve is up" in line:
            break
    if not lines or "moeserve is up" not in lines[-1]:
        raise SystemExit("cluster did not start:\n" + "".join(lines) + logs(run_dir))
    with open(os.path.join(run_dir, "cluster.json")) as f:
        cluster = json.load(f)
    targets = cluster["metrics"]
    components = sorted({t["component"] for t in targets})
    check(components == ["expert-shard", "gateway", "kvcache", "router", "worker"],
          f"cluster.json lists a metrics port for every service ({len(targets)}: {components})")

    # Prometheus: every service every second, deploy/'s rules evaluated every second.
    rules = px.rules()
    for group in rules["groups"]:
        group["interval"] = "1s"
    with open(os.path.join(WORK, "rules.yml"), "w") as f:
        yaml.safe_dump(rules, f)
    jobs = {}
    for t in targets:
        jobs.setdefault(f"moeserve-{t['component']}", []).append(t["address"])
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [os.path.join(WORK, "rules.yml")],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": addrs}]}
                                 for job, addrs in sorted(jobs.items())]}
    with open(os.path.join(WORK, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f)
    rc = subprocess.run(["promtool", "check", "config", os.path.join(WORK, "prometheus.yml")],
                        capture_output=True, text=True)
    check(rc.returncode == 0, "promtool check config (generated scrape config)", rc.stdout + rc.stderr)
    prom_port = free_port()
    prom_log = open(os.path.join(WORK, "prometheus.log"), "w")
    prom = subprocess.Popen(["prometheus", f"--config.file={os.path.join(WORK, 'prometheus.yml')}",
                             f"--storage.tsdb.path={os.path.join(WORK, 'tsdb')}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=prom_log, stderr=subprocess.STDOUT)
    prom_url = f"http://127.0.0.1:{prom_port}"

    # Traffic.
    gw = f"http://127.0.0.1:{port}"
    status, body = http(f"{gw}/v1/prices")
    check(status == 200 and json.loads(body) == {
        "object": "list", "currency": "EUR",
        "data": [{"model": "tiny", "input_cache_hit_per_million": 0.5,
                  "input_cache_miss_per_million": 4, "output_per_million": 16}]},
          "GET /v1/prices serves the --price-table passed through `moeserve up`", body)
    long_prompt = " ".join(f"word{i}" for i in range(60))  # several 16-token KV blocks
    usages = []
    for i in range(3):
        status, body = http(f"{gw}/v1/chat/completions",
                            {"model": "tiny", "max_tokens": 12,
                             "messages": [{"role": "user", "content": long_prompt}]},
                            headers={"Authorization": f"Bearer {API_KEY}"})
        check(status == 200, f"chat request {i} with an API key", body)
        if status == 200:
            usages.append(json.loads(body)["usage"])
    check(any(u["prompt_cache_hit_tokens"] > 0 for u in usages),
          "a repeated prompt is served from the KV cache")
    answer_tokens = 0
    for i in range(2):
        status, body = http(f"{gw}/v1/completions",
                            {"model": "tiny", "prompt": f"count {i}", "max_tokens": 8})
        check(status == 200, f"completion {i}", body)
        if status == 200:
            answer_tokens += json.loads(body)["usage"]["completion_tokens"]
    # A stream the client walks away from after its first event.
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    req = json.dumps({"model": "tiny", "stream": True, "max_tokens": 2000,
                      "messages": [{"role": "user", "content": "go on"}]}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
              b"\r\nContent-Length: " + str(len(req)).encode() + b"\r\n\r\n" + req)
    got = b""
    while b"data:" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    check(b"data:" in got, "the abandoned stream started", got.decode(errors="replace"))
    s.close()
    http(f"{gw}/v1/chat/completions", {"model": "tiny"})  # 400
    http(f"{gw}/v1/nowhere")  # 404

    # promtool check metrics on every endpoint.
    gateway_text = ""
    for t in targets:
        _, text = http(f"http://{t['address']}/metrics")
        if t["component"] == "gateway":
            gateway_text = text
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
        check(r.returncode == 0 and "moeserve_" in text,
              f"promtool check metrics: {t['name']} ({len(text.splitlines())} lines)",
              r.stdout + r.stderr)
    check(API_KEY not in gateway_text, "the raw API key is not in the gateway's metrics")

    def query(expr):
        url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read() or b"{}")
        except OSError as e:
            return {"status": "error", "error": str(e)}

    def value(expr):
        r = query(expr)
        res = r.get("data", {}).get("result", []) if r.get("status") == "success" else []
        return float(res[0]["value"][1]) if res else None

    up_count = wait_for(lambda: value('count(up{job=~"moeserve-.*"} == 1)') == len(targets), 60)
    check(up_count, f"Prometheus scrapes all {len(targets)} services (up == 1)",
          json.dumps(query('up{job=~"moeserve-.*"}')))

    # The gateway's counters, as Prometheus sees them.
    key_label = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()[:16]
    p = PRICES["models"]["tiny"]
    expected_cost = sum(u["prompt_cache_hit_tokens"] * p["input_cache_hit_per_million"]
                        + u["prompt_cache_miss_tokens"] * p["input_cache_miss_per_million"]
                        + u["completion_tokens"] * p["output_per_million"] for u in usages) / 1e6
    cost_expr = f'sum(moeserve_gateway_cost_total{{api_key="{key_label}",currency="EUR"}})'
    cost = wait_for(lambda: value(cost_expr), 30)
    check(cost is not None and abs(cost - expected_cost) < 1e-9,
          f"cost of the hashed key = the usage at the table's prices ({cost} vs {expected_cost})")
    cancelled = wait_for(lambda: (value("sum(moeserve_gateway_requests_cancelled_total)") or 0) >= 1,
                         60)
    check(cancelled, "the abandoned stream counts as cancelled")
    check(wait_for(lambda: value("sum(moeserve_gateway_open_streams)") == 0, 60),
          "no stream is left open")
    answer = value('sum(moeserve_gateway_answer_tokens_total)')
    check(answer is not None and answer >= answer_tokens,
          f"answer tokens include the completions' ({answer} >= {answer_tokens})")
    check((value('sum(moeserve_gateway_requests_total{code="404"})') or 0) >= 1
          and (value('sum(moeserve_gateway_requests_total{code="400"})') or 0) >= 1,
          "4xx responses are counted by code")
    check((value("sum(moeserve_expert_shard_expert_tokens_total)") or 0) > 0,
          "expert shards counted token rows")
    check((value("sum(moeserve_kvcache_fetched_blocks_total)") or 0) > 0,
          "the KV-cache service delivered blocks")
    check(value("sum(moeserve_worker_kv_wait_seconds_count)") is not None
          and value("sum(moeserve_worker_kv_wait_seconds_count)") > 0,
          "workers waited for KV-cache blocks (and it shows)")

    # Every expression of the dashboards and the rules returns data.
    exprs = [(w, e, "dashboard") for w, e in px.dashboard_exprs()] + px.rule_exprs()
    for where, expr, kind in exprs:
        if kind == "alert":
            r = query(expr)
            check(r.get("status") == "success", f"{where}: alert expression evaluates",
                  json.dumps(r))
            expr = px.alert_quantity(expr) or expr
        deadline = time.time() + 30
        while True:
            got = query(expr)
            if got.get("status") == "success" and got["data"]["result"]:
                break
            if time.time() > deadline:
                break
            time.sleep(1)
        check(got.get("status") == "success" and bool(got["data"]["result"]),
              f"{where}: returns data", f"{expr}\n{json.dumps(got)[:500]}")
finally:
    if prom is not None:
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
    up.send_signal(signal.SIGTERM)
    try:
        up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()

if FAILS:
    print(f"\n{len(FAILS)} check(s) failed", flush=True)
    print(logs(run_dir))
    sys.exit(1)
print("all observability checks passed")
