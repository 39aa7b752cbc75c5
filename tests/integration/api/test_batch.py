#!/usr/bin/env python3
"""The Batch API through a real cluster (`moeserve up`, its own Redis for batches) and the official
OpenAI Node SDK (batch_sdk.mjs): uploads, batches of chat and completions requests whose answers
equal the direct ones, a bad body's error line, a failed validation, cancel, lists; then a batch
that survives `kill -9` of the gateway mid-run (restarted by `moeserve up --restart-delay-s`) with
every custom_id answered exactly once and the answered requests not run again.
Usage: test_batch.py BIN_DIR WORKDIR"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testing"))
from moeserve_cluster import FAILS, check, free_port, start_cluster, stop  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
NODE_DIR = os.path.join(HERE, "..", "..", "..", "tools", "node")
MOESERVE = os.path.join(BIN, "moeserve")
LONG = 10  # requests of the batch that lives through the restart


def sdk(base, *args):
    r = subprocess.run(["node", os.path.join(HERE, "batch_sdk.mjs"), base, "tiny", NODE_DIR,
                        *args], capture_output=True, text=True, timeout=1200)
    sys.stderr.write(r.stderr[-3000:])
    if r.returncode != 0:
        check(False, f"batch_sdk.mjs {args[0]} exited {r.returncode}")
        return {"checks": []}
    result = json.loads(r.stdout)
    for c in result["checks"]:
        check(c["ok"], f"{args[0]}: {c['what']}")
    return result


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def gateway_process(run_dir):
    with open(os.path.join(run_dir, "cluster.json")) as f:
        return next(p for p in json.load(f)["processes"] if p["name"] == "gateway")


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    model = os.path.join(WORK, "tiny")
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny"], check=True,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    run_dir = os.path.join(WORK, "run")
    base = f"http://127.0.0.1:{port}/v1"
    cluster = start_cluster(MOESERVE, model, port, run_dir, "--prefill", "1", "--decode", "1",
                            "--shards", "1", "--batch-concurrency", "1", "--restart-delay-s", "1")
    try:
        with open(os.path.join(run_dir, "cluster.json")) as f:
            info = json.load(f)
        check("batch_redis" in info, "cluster.json names the Batch API's Redis")
        result = sdk(base, "main")
        check(len(result["checks"]) >= 30, f"main: {len(result['checks'])} checks ran")

        # A batch in progress when the gateway dies.
        batch_id = sdk(base, "start-long", str(LONG)).get("batch_id")
        check(bool(batch_id), f"long batch created ({batch_id})")
        answered = 0
        status = None
        for _ in range(3000):  # bounded by count, not time
            b = get_json(f"{base}/batches/{batch_id}")
            status, answered = b["status"], b["request_counts"]["completed"]
            if status != "validating" and (answered >= 2 or status != "in_progress"):
                break
            time.sleep(0.05)
        check(status == "in_progress" and 2 <= answered < LONG,
              f"gateway killed mid-batch: {status}, {answered} of {LONG} answered")
        gw = gateway_process(run_dir)
        os.kill(gw["pid"], signal.SIGKILL)
        for _ in range(600):
            p = gateway_process(run_dir)
            if p["restarts"] >= 1 and p["pid"] > 0:
                try:
                    get_json(f"http://127.0.0.1:{port}/health")
                    break
                except OSError:
                    pass
            time.sleep(0.1)
        check(gateway_process(run_dir)["restarts"] >= 1, "the gateway was restarted")
        sdk(base, "finish-long", batch_id, str(LONG))
        with open(os.path.join(run_dir, "gateway.log")) as f:
            log = f.read()
        m = re.search(rf"batch {batch_id} resumed \(in_progress\): (\d+) of {LONG} requests", log)
        resumed = int(m.group(1)) if m else -1
        check(resumed >= answered,
              f"the restarted gateway kept the {resumed} stored results (>= {answered} seen "
              "before the kill) and ran only the rest")
    finally:
        stop(cluster)
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
