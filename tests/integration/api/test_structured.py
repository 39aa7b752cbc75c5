#!/usr/bin/env python3
"""Structured output (response_format json_schema / json_object, structured_sdk.mjs) and tool
calling (tools_sdk.mjs) through a real cluster (`moeserve up`) and the official OpenAI Node SDK,
each JSON answer and tool-call arguments validated by ajv. Usage: test_structured.py BIN_DIR WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "testing"))
from moeserve_cluster import FAILS, check, free_port, start_cluster, stop  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
NODE_DIR = os.path.join(HERE, "..", "..", "..", "tools", "node")
MOESERVE = os.path.join(BIN, "moeserve")


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    model = os.path.join(WORK, "tiny")
    subprocess.run([MOESERVE, "mkmodel", "--out", model, "--preset", "tiny"], check=True,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    cluster = start_cluster(MOESERVE, model, port, os.path.join(WORK, "run"), "--prefill", "1",
                            "--decode", "1", "--shards", "1")
    try:
        for script, least in (("structured_sdk.mjs", 20), ("tools_sdk.mjs", 30)):
            r = subprocess.run(["node", os.path.join(HERE, script),
                                f"http://127.0.0.1:{port}/v1", "tiny", NODE_DIR],
                               capture_output=True, text=True, timeout=900)
            sys.stderr.write(r.stderr[-2000:])
            if r.returncode != 0:
                check(False, f"{script} exited {r.returncode}")
                continue
            result = json.loads(r.stdout)
            check(len(result["checks"]) >= least, f"{script}: {len(result['checks'])} checks ran")
            for c in result["checks"]:
                check(c["ok"], f"{script}: {c['what']}")
    finally:
        stop(cluster)
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
