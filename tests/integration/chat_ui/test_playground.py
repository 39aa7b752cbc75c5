#!/usr/bin/env python3
"""The playground end to end: a real cluster (`moeserve up`, with a price table of its own), the
page in headless Chromium (default) or Firefox through playground.mjs. Screenshots land in
WORKDIR/screenshots.
Usage: test_playground.py BIN_DIR WORKDIR [chromium|firefox]"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import FAILS, Cluster, check, free_port  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
BROWSER = sys.argv[3] if len(sys.argv) > 3 else "chromium"
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tools", "node"))

# The browser and the npm package that drives it (see browsers.mjs).
EXE, DRIVER = {"chromium": ("/usr/bin/chromium", "playwright-core"),
               "firefox": ("/usr/bin/firefox-esr", "puppeteer-core")}[BROWSER]
if not os.path.exists(EXE) or not os.path.exists(os.path.join(NODE_DIR, "node_modules", DRIVER)):
    print(f"{EXE} or {DRIVER} is missing (scripts/install-deps.sh installs both)")
    sys.exit(1)

os.makedirs(WORK, exist_ok=True)
# Prices of our own, so the cost on the page is checked against numbers the test chose.
price = {"input_cache_hit_per_million": 0.5, "input_cache_miss_per_million": 3.25,
         "output_per_million": 12.0}
price_file = os.path.join(WORK, "prices.json")
with open(price_file, "w") as f:
    json.dump({"currency": "USD", "models": {"*": price}}, f)
shots = os.path.join(WORK, "screenshots")
shutil.rmtree(shots, ignore_errors=True)



def start_keyed_gateway(cluster):
    """A second gateway with API keys (one key, made with `moeserve keys add`) on the cluster's
    router, for the page's 401 path. Returns (process, url, key)."""
    keys_file = os.path.join(WORK, "keys.json")
    if os.path.exists(keys_file):
        os.remove(keys_file)
    key = subprocess.run([cluster.moeserve, "keys", "add", "--file", keys_file, "--name", "web",
                          "--tier", "web"], capture_output=True, text=True,
                         check=True).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [os.path.join(BIN, "moeserve-gateway"), "--model", cluster.model, "--host", "127.0.0.1",
         "--port", str(port), "--grpc-port", "0", "--router", cluster.info["router"],
         "--api-keys", keys_file], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", key


cluster = Cluster(BIN, WORK, "playground", ["--price-table", price_file])
keyed = None
try:
    keyed, keyed_url, keyed_key = start_keyed_gateway(cluster)
    run = subprocess.run(
        ["node", os.path.join(HERE, "playground.mjs"), cluster.url, shots, NODE_DIR,
         cluster.moeserve, cluster.info["router"], cluster.metrics_address(),
         json.dumps(price), BROWSER], capture_output=True, text=True, timeout=900,
        env=dict(os.environ, KEYED_URL=keyed_url, KEYED_KEY=keyed_key))
    print(run.stdout, end="")
    if run.returncode != 0:
        print(run.stderr)
    check(run.returncode == 0, "playground.mjs passed")
    for name in ("playground-mid-stream.png", "playground-answer.png", "playground-phone.png",
                 "playground-keys.png"):
        check(os.path.getsize(os.path.join(shots, name)) > 10000 if os.path.exists(
            os.path.join(shots, name)) else False, f"screenshot {name} saved")
finally:
    if keyed is not None:
        keyed.terminate()
        keyed.wait(timeout=30)
    cluster.stop()

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
