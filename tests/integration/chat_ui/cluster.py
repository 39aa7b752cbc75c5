"""A real cluster for the chat UI tests: `moeserve up` on a free loopback port with the tiny
model, its addresses (RUN_DIR/cluster.json), what the server says about running work (workers'
load and KV pools through `moeserve status`, and the gateway's Prometheus metrics when `up`
exposes them), and a clean stop. Python 3 standard library only."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, bin_dir, work, name, extra=()):
        self.moeserve = os.path.join(bin_dir, "moeserve")
        os.makedirs(work, exist_ok=True)
        self.model = os.path.join(work, "tiny")
        if not os.path.exists(os.path.join(self.model, "model.safetensors")):
            subprocess.run([self.moeserve, "mkmodel", "--out", self.model, "--preset", "tiny",
                            "--seed", "0"], check=True, stdout=subprocess.DEVNULL)
        self.run_dir = os.path.join(work, f"run-{name}")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.moeserve, "up", "--model", self.model, "--port", str(self.port), "--run-dir",
             self.run_dir, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.time() + 600
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "moeserve is up" in line:
                break
        else:
            line = ""
        if "moeserve is up" not in "".join(lines):
            self.proc.kill()
            raise SystemExit("cluster did not start:\n" + "".join(lines) + self.logs())
        with open(os.path.join(self.run_dir, "cluster.json")) as f:
            self.info = json.load(f)

    def workers(self):
        out = subprocess.run([self.moeserve, "status", "--router", self.info["router"]],
                             capture_output=True, text=True).stdout
        return json.loads(out)["workers"]

    def busy(self):
        return any(w["running"] > 0 for w in self.workers() if w["healthy"])

    def idle(self):
        return all(w["running"] == 0 and w["waiting"] == 0 and
                   w["kv_blocks_free"] == w["kv_blocks_total"] for w in self.workers()
                   if w["healthy"])

    def metrics_address(self):
        """The gateway's Prometheus endpoint, when `moeserve up` wrote one into cluster.json."""
        for key in ("gateway_metrics", "metrics"):
            v = self.info.get(key)
            if isinstance(v, str):
                return v
            if isinstance(v, dict) and isinstance(v.get("gateway"), str):
                return v["gateway"]
        return None

    def gateway_metric(self, name):
        """The value of an unlabelled gateway metric; None without metrics."""
        addr = self.metrics_address()
        if addr is None:
            return None
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{}"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def wait(self, cond, tries=600, pause=0.1):
        """Polls `cond` (bounded by a count, never asserted on time) and returns its last value."""
        for _ in range(tries):
            v = cond()
            if v:
                return v
            time.sleep(pause)
        return cond()

    def logs(self):
        out = []
        if os.path.isdir(self.run_dir):
            for name in sorted(os.listdir(self.run_dir)):
                if name.endswith(".log"):
                    with open(os.path.join(self.run_dir, name), errors="replace") as f:
                        out.append(f"--- {name}\n" + f.read()[-2000:])
        return "\n".join(out)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        check(self.proc.returncode == 0, f"moeserve up exited cleanly ({self.proc.returncode})")
        if FAILS:
            print(self.logs())
