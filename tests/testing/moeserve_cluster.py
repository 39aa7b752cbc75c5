"""Helpers shared by the Python integration tests: pass/fail bookkeeping, free ports, and a real
`moeserve up` cluster started and stopped as a child process."""
import signal
import socket
import subprocess
import time

FAILS = []


def check(cond, what):
    """Records one assertion; the test exits non-zero at the end if any failed."""
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


def start_cluster(moeserve, model, port, run_dir, *extra, timeout=600):
    """Starts `moeserve up` and returns the process once it prints that it is up."""
    p = subprocess.Popen([moeserve, "up", "--model", model, "--port", str(port), "--run-dir",
                          run_dir, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "moeserve is up" in line:
            return p
    p.kill()
    raise SystemExit("cluster did not start:\n" + "".join(lines))


def stop(p):
    """SIGTERM, then SIGKILL if it has not exited within a minute."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
