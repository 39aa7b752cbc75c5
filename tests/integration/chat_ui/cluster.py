"""A real cluster for the chat UI tests: `moeserve up` on a free loopback port with the tiny
model, its addresses (RUN_DIR/cluster.json), what the server says about running work (workers'
load and KV pools through `moeserve status`, and the gateway's Prometheus metrics), and a clean
stop. Python 3 standard library only."""
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
        # The gateway's Prometheus endpoint: `up` lists every service's metrics port.
        self.metrics = next((m["address"] for m in self.info.get("metrics", [])
                             if m.get("name") == "gateway"), None)
        if self.metrics is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
            raise SystemExit("cluster.json lists no metrics port for the gateway: "
                             + json.dumps(self.info))

    def workers(self):
        """The healthy workers' loads; None when `moeserve status` failed this time."""
        out = subprocess.run([self.moeserve, "status", "--router", self.info["router"]],
                             capture_output=True, text=True)
        try:
            return [w for w in json.loads(out.stdout)["workers"] if w["healthy"]]
        except (ValueError, KeyError, TypeError):
            print(f"note: moeserve status failed ({out.stderr.strip()[:200]}); polling again")
            return None

    def busy(self):
        ws = self.workers()
        return ws is not None and any(w["running"] > 0 for w in ws)

    def idle(self):
        ws = self.workers()
        return ws is not None and all(w["running"] == 0 and w["waiting"] == 0 and
                                      w["kv_blocks_free"] == w["kv_blocks_total"] for w in ws)

    def metrics_address(self):
        return self.metrics

    def gateway_metric(self, name):
        """The sum of a gateway metric over its label sets."""
        total = 0.0
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

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
