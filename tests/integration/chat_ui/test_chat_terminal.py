#!/usr/bin/env python3
"""`moeserve chat` as a person uses it, in a real terminal (tmux: send-keys, capture-pane) against
a real cluster: a turn streams with the reasoning dim and the answer in normal text, history is
sent back (the prompt grows), /effort bounds the reasoning, Ctrl-C stops only the reply (the
server sees the cancellation and the program carries on), /reset forgets the history, /system
adds a system prompt, Ctrl-D leaves. Usage: test_chat_terminal.py BIN_DIR WORKDIR"""
import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import FAILS, Cluster, check  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
if shutil.which("tmux") is None:
    print("tmux is missing (scripts/install-deps.sh installs it)")
    sys.exit(1)

# A tmux server of our own (its own socket), so nobody else's sessions are touched.
SOCKET = f"moeserve-chat-test-{os.getpid()}"
TMUX = ["tmux", "-L", SOCKET, "-f", "/dev/null"]
SESSION = "chat"
STATS = re.compile(r"\(prompt (\d+), cached (\d+), reasoning (\d+), answer (\d+) tokens; "
                   r"first token [\d.]+ s(?:, first answer [\d.]+ s)?, total [\d.]+ s")
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def tmux(*args):
    return subprocess.run(TMUX + list(args), capture_output=True, text=True)


def screen(escapes=False):
    """The whole pane, history included, wrapped lines joined; SGR sequences with `escapes`."""
    return tmux("capture-pane", "-p", "-J", "-S", "-", *(["-e"] if escapes else []),
                "-t", SESSION).stdout


def send_line(text):
    tmux("send-keys", "-t", SESSION, "-l", text)
    tmux("send-keys", "-t", SESSION, "Enter")


def wait_for(pred, tries=3000):
    """Polls the screen until pred(screen) is truthy (bounded by a count, never by asserting on
    elapsed time); returns the last value."""
    for _ in range(tries):
        v = pred(screen())
        if v:
            return v
        time.sleep(0.1)
    return pred(screen())


def stats_lines(text):
    return [tuple(int(g) for g in m.groups()) for m in STATS.finditer(text)]


def turn(text):
    """Sends a message and waits for its stats line; returns (prompt, cached, reasoning, answer)
    or None when no stats line came."""
    before = len(stats_lines(screen()))
    send_line(text)
    got = wait_for(lambda s: len(stats_lines(s)) > before)
    return stats_lines(screen())[before] if got else None


def styled_runs(text):
    """(dim, text) runs of `text` by its SGR sequences, as tmux writes them with -e."""
    runs, dim, pos = [], False, 0
    for m in SGR.finditer(text):
        if m.start() > pos:
            runs.append((dim, text[pos:m.start()]))
        for p in (m.group(1) or "0").split(";"):
            if p in ("0", ""):
                dim = False
            elif p == "2":
                dim = True
            elif p == "22":
                dim = False
        pos = m.end()
    runs.append((dim, text[pos:]))
    return [(d, t) for d, t in runs if t.strip()]


def last_reply(escaped, message):
    """The text between the prompt line that sent `message` and the next stats line."""
    start = escaped.rfind(message)
    end = escaped.find("(prompt ", start)
    return escaped[escaped.find("\n", start) + 1:end] if start >= 0 and end > 0 else ""


cluster = Cluster(BIN, WORK, "chat")
try:
    tmux("kill-server")
    tmux("new-session", "-d", "-s", SESSION, "-x", "160", "-y", "50",
         f"env -u NO_COLOR {cluster.moeserve} chat --url {cluster.url}/v1 --reasoning-effort low "
         "--max-tokens 400 --temperature 0")
    tmux("set-option", "-t", SESSION, "history-limit", "50000")
    check(bool(wait_for(lambda s: "moeserve chat: tiny at" in s and "you>" in s)),
          "the chat starts and picks the served model: " + screen()[:200].replace("\n", " | "))

    # ---- a turn streams: reasoning dim first, then the answer in normal text ----
    first_msg = "Why is the sky blue?"
    before = len(stats_lines(screen()))
    send_line(first_msg)
    partial = wait_for(lambda s: (s.rfind(first_msg) >= 0 and
                                  len(s[s.rfind(first_msg) + len(first_msg):].strip()) > 20 and
                                  len(stats_lines(s)) == before and s) or
                       len(stats_lines(s)) > before)
    check(isinstance(partial, str), "text appears on screen before the reply is complete (streaming)")
    wait_for(lambda s: len(stats_lines(s)) > before)
    t1 = stats_lines(screen())[before:before + 1]
    check(bool(t1) and t1[0][2] == 257 and t1[0][3] == 143,
          f"turn 1: low effort bounds reasoning at 257 tokens, 143 answer tokens: {t1}")
    runs = styled_runs(last_reply(screen(escapes=True), first_msg))
    first_normal = next((i for i, (dim, _) in enumerate(runs) if not dim), None)
    check(bool(runs) and runs[0][0] and first_normal is not None and first_normal > 0 and
          all(not dim for dim, _ in runs[first_normal:]),
          f"the reasoning is dim (SGR 2) and the answer after it normal: "
          f"{[(d, t[:20]) for d, t in runs[:4]]} ... {len(runs)} runs")

    # ---- history goes back: the second prompt holds the first turn ----
    t2 = turn("And why are sunsets red?")
    check(t1 and t2 and t2[0] > t1[0][0] + 50,
          f"turn 2's prompt includes turn 1 (prompt {t1[0][0] if t1 else None} -> "
          f"{t2[0] if t2 else None} tokens)")

    # ---- /effort ----
    send_line("/effort high")
    check(bool(wait_for(lambda s: "reasoning effort: high" in s)), "/effort high is acknowledged")
    t3 = turn("Think harder.")
    check(t3 is not None and t3[2] == 400 and t3[3] == 0,
          f"with /effort high the 400-token reply is all reasoning (> the low budget): {t3}")
    send_line("/effort extreme")
    check(bool(wait_for(lambda s: "'extreme' is not one of" in s)), "a bad /effort value is refused")

    # ---- Ctrl-C stops only the reply; the server sees it ----
    send_line("/max-tokens 4000")
    wait_for(lambda s: "max tokens: 4000" in s)
    long_msg = "Tell me a very long story."
    send_line(long_msg)
    check(bool(wait_for(lambda s: s.rfind(long_msg) >= 0 and
                        len(s[s.rfind(long_msg) + len(long_msg):].strip()) > 0)),
          "the long reply is streaming")
    check(bool(cluster.wait(cluster.busy, tries=100)), "a worker is running the reply")
    open_streams = cluster.gateway_metric("moeserve_gateway_open_streams")
    cancelled = cluster.gateway_metric("moeserve_gateway_requests_cancelled_total")
    tmux("send-keys", "-t", SESSION, "C-c")
    check(bool(wait_for(lambda s: "[stopped; this turn is not kept]" in s)),
          "Ctrl-C stops the reply and says so")
    check(bool(cluster.wait(cluster.idle)),
          "after Ctrl-C every worker is idle and every KV block is free again (the server "
          "cancelled the generation)")
    check(open_streams >= 1, f"the gateway had the stream open ({open_streams})")
    check(bool(cluster.wait(lambda: cluster.gateway_metric(
        "moeserve_gateway_requests_cancelled_total") > cancelled)),
          f"the gateway counted the cancellation ({cancelled} -> "
          f"{cluster.gateway_metric('moeserve_gateway_requests_cancelled_total')})")
    check(bool(cluster.wait(lambda: cluster.gateway_metric("moeserve_gateway_open_streams") == 0)),
          "the gateway has no open stream left")
    after_stop = screen()
    check(after_stop.rstrip().endswith("you>"), "the program keeps running: a new prompt")

    # ---- /reset: the same message costs the same prompt as the very first one ----
    send_line("/max-tokens 400")
    send_line("/effort low")
    send_line("/reset")
    # Turns 1 and 2; turn 3 (all reasoning, no answer) and the stopped one were never kept.
    check(bool(wait_for(lambda s: "history cleared (2 turns forgotten)" in s)),
          "/reset forgets the 2 turns with an answer")
    t4 = turn(first_msg)
    same = (0, 2, 3)  # prompt, reasoning, answer (the cached count may differ)
    check(t1 and t4 is not None and [t4[i] for i in same] == [t1[0][i] for i in same],
          f"after /reset the first message is sent alone again, same reply as at first: {t4} vs {t1}")

    # ---- /system ----
    send_line("/reset")
    send_line("/system You are a terse assistant who answers in one sentence.")
    check(bool(wait_for(lambda s: "system prompt set" in s)), "/system is acknowledged")
    t5 = turn(first_msg)
    check(t1 and t5 is not None and t5[0] > t1[0][0] + 5,
          f"with /system the prompt grows by the system text: {t1[0][0] if t1 else None} -> "
          f"{t5[0] if t5 else None}")
    send_line("/system")
    check(bool(wait_for(lambda s: "system prompt removed" in s)), "/system without text removes it")

    # ---- Ctrl-C at the prompt does not quit; Ctrl-D does ----
    tmux("send-keys", "-t", SESSION, "C-c")
    check(bool(wait_for(lambda s: "nothing to stop" in s)), "Ctrl-C at the prompt keeps the program")
    tmux("send-keys", "-t", SESSION, "C-d")
    gone = False
    for _ in range(300):
        if tmux("has-session", "-t", SESSION).returncode != 0:
            gone = True
            break
        time.sleep(0.1)
    check(gone, "Ctrl-D leaves the chat")
finally:
    if FAILS:
        print("---- screen\n" + screen())
    tmux("kill-server")
    # tmux leaves its socket file behind.
    sock = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}", SOCKET)
    if os.path.exists(sock):
        os.remove(sock)
    cluster.stop()

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
