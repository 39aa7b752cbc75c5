#!/usr/bin/env python3
"""Resumable streams end to end: a real cluster (`moeserve up --api-keys
--stream-resume-grace-s`), driven by the official OpenAI Node SDK (stream_resume_sdk.mjs: cut,
resume, keys, explicit cancel, bad inputs) and by a raw socket here (a client that never comes
back: the generation is cancelled when the grace period ends, and every KV block is freed).
Usage: test_stream_resume.py BIN_DIR WORKDIR"""
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "chat_ui"))
from cluster import FAILS, Cluster, check  # noqa: E402

BIN, WORK = sys.argv[1], sys.argv[2]
NODE_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "..", "tools", "node"))
MOESERVE = os.path.join(BIN, "moeserve")
GRACE_S = 8  # long enough for a loaded machine to reconnect within it


def make_keys(path):
    with open(path, "w") as f:
        json.dump({"tiers": {"std": {}}, "keys": []}, f)
    keys = {}
    for name in ("alice", "bob"):
        r = subprocess.run([MOESERVE, "keys", "add", "--file", path, "--name", name, "--tier",
                            "std"], capture_output=True, text=True, check=True)
        keys[name] = r.stdout.strip()
    return keys


def check_cut_and_resume(name, o, n_choices):
    if "sdk_error" in o:
        return check(False, f"{name}: {o['sdk_error']}")
    ref, cut, res = o["reference"], o["cut"], o["resumed"]
    check(ref["ids"] == list(range(1, ref["events"] + 1)) and ref["stream_id"],
          f"{name}: every SSE event of a stream has an id, 1..{ref['events']}, and the response "
          f"names the stream (X-Moeserve-Stream-Id {ref['stream_id']})")
    check(cut["stream_id"] == cut["chunk_id"],
          f"{name}: the stream id is the completion id of the chunks ({cut['chunk_id']})")
    check(0 < cut["last_event_id"] < ref["events"],
          f"{name}: the client got {cut['events']} events (last id {cut['last_event_id']}) of "
          f"{ref['events']} before closing its socket")
    check(res["status"] == 200 and res["ids"] and res["ids"][0] == cut["last_event_id"] + 1,
          f"{name}: the SDK's GET .../stream with Last-Event-ID {cut['last_event_id']} resumed "
          f"at event {res['ids'][:1]} ({res['sdk_chunks']} chunks through the SDK)")
    check(o["ids_one_to_n"] and o["joined_ids"] == ref["ids"],
          f"{name}: ids before and after the cut are 1..{len(o['joined_ids'])}, none lost, "
          f"none twice")
    check(o["joined_equals_reference"] and o["done_last"],
          f"{name}: the events before the cut + the resumed ones equal an uninterrupted run "
          f"with the same seed ({n_choices} choice(s): the same text, finish reasons and "
          f"usage), ending with [DONE]")
    summary = json.loads(o["reference_summary"])
    check(len(summary["choices"]) == n_choices and
          all(c["text"] or c["reasoning"] for c in summary["choices"].values()),
          f"{name}: the reference run generated text for each choice")
    e = o["again"]
    check(e is not None and e["status"] == 404 and e["name"] == "NotFoundError",
          f"{name}: once read to its end the stream is gone: 404 NotFoundError ({e})")


def check_keys(o):
    if "sdk_error" in o:
        return check(False, f"keys: {o['sdk_error']}")
    check(o["bob"] and o["bob"]["status"] == 404 and o["bob"]["name"] == "NotFoundError",
          f"another key cannot resume alice's stream: 404 ({o['bob']})")
    check(o["no_key"] and o["no_key"]["status"] == 401,
          f"no key: 401 before anything else ({o['no_key']})")
    check(o["completions_route"] and o["completions_route"]["status"] == 404,
          f"a chat stream is not found under /v1/completions ({o['completions_route']})")
    ids = o["alice_ids"]
    check(ids == list(range(1, len(ids) + 1)) and o["alice_chunks"] >= 60,
          f"alice resumes without Last-Event-ID: every event from 1 ({len(ids)} events, "
          f"{o['alice_chunks']} chunks)")


def check_cancel(o):
    if "sdk_error" in o:
        return check(False, f"cancel: {o['sdk_error']}")
    c, e = o["cancelled"], o["error"]
    check(c == {"id": c and c.get("id"), "object": "stream.cancel", "cancelled": True},
          f"POST .../{{id}}/cancel answers 200 ({c})")
    check(e is not None and e["name"] == "APIError" and o["chunks"] < 4000 and
          "cancelled" in e["message"],
          f"the cancelled stream ended at once with an error event the SDK raised, after "
          f"{o['chunks']} of 4000 chunks ({e})")
    b = o["bob_cancel"]
    check(b is not None and b["status"] == 404, f"another key's cancel: 404 ({b})")


def check_bad(o):
    if "sdk_error" in o:
        return check(False, f"bad: {o['sdk_error']}")
    want = {"delivered": 404, "unknown": 404, "odd_id": 404, "letters": 400, "negative": 400,
            "huge": 400, "beyond": 400, "query_bad": 400, "query_differs": 400,
            "post_stream": 405, "get_cancel": 405, "cancel_unknown": 404, "query_ok": 200}
    for name, status in want.items():
        r = o[name]
        body_ok = status == 200 or (r["error"] is not None and r["error"].get("message"))
        check(r["status"] == status and body_ok,
              f"resume {name}: {status}{'' if status == 200 else ' with an OpenAI error body'} "
              f"({r})")
    check("Last-Event-ID" in o["beyond"]["error"]["message"],
          f"beyond the last event names Last-Event-ID: {o['beyond']['error']['message']}")


def cut_raw(port, key, body, events):
    """Starts a stream on a raw socket, reads `events` SSE events, closes the socket; returns
    the stream id and the last event id read."""
    payload = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: application/json\r\nAuthorization: Bearer " + key.encode() +
              b"\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    got = b""
    while got.count(b"\ndata: ") < events:
        data = s.recv(65536)
        if not data:
            break
        got += data
    s.close()
    head = got.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    sid = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                if line.lower().startswith("x-moeserve-stream-id:")), None)
    ids = [int(line[4:]) for line in got.decode(errors="replace").split("\n")
           if line.startswith("id: ")]
    return sid, (ids[-1] if ids else 0)


def check_expiry(cluster, keys):
    """A client that disconnects and never resumes: the generation goes on for the grace period,
    then it is cancelled, the workers are idle with every KV block free, and a late resume is
    a 404."""
    expired_before = cluster.gateway_metric("moeserve_gateway_streams_expired_total")
    sid, last = cut_raw(cluster.port, keys["alice"], {
        "model": "tiny", "messages": [{"role": "user", "content": "Go on and on."}],
        "max_tokens": 4000, "ignore_eos": True, "stream": True}, 3)
    check(sid is not None and last >= 2, f"a raw client read events up to {last} of {sid}")
    check(bool(cluster.wait(cluster.busy, tries=50)) and bool(cluster.wait(
        lambda: cluster.gateway_metric("moeserve_gateway_detached_streams") == 1, tries=50)),
          "after the disconnect the generation keeps running, detached (resumable)")
    expired = cluster.wait(
        lambda: cluster.gateway_metric("moeserve_gateway_streams_expired_total") > expired_before,
        tries=1200)
    check(bool(expired), "the grace period ended: moeserve_gateway_streams_expired_total rose")
    check(bool(cluster.wait(cluster.idle)),
          "then the generation was cancelled: workers idle, every KV block free")
    check(cluster.gateway_metric("moeserve_gateway_open_streams") == 0 and
          cluster.gateway_metric("moeserve_gateway_detached_streams") == 0,
          "no open or detached stream is left (metrics)")
    req = urllib.request.Request(f"{cluster.url}/v1/chat/completions/{sid}/stream",
                                 headers={"Authorization": f"Bearer {keys['alice']}",
                                          "Last-Event-ID": str(last)})
    try:
        urllib.request.urlopen(req, timeout=30)
        status, body = 200, {}
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read() or b"{}")
    check(status == 404 and "error" in body and body["error"].get("message"),
          f"a reconnect after the grace period: 404 with an OpenAI error body ({body})")


os.makedirs(WORK, exist_ok=True)
keys_file = os.path.join(WORK, "keys.json")
keys = make_keys(keys_file)
cluster = Cluster(BIN, WORK, "resume",
                  ["--api-keys", keys_file, "--stream-resume-grace-s", str(GRACE_S)])
try:
    cfg = {"node_dir": NODE_DIR, "model": "tiny", "url": cluster.url + "/v1", "keys": keys}
    r = subprocess.run(["node", os.path.join(HERE, "stream_resume_sdk.mjs"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"stream_resume_sdk.mjs failed ({r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout)
    check_cut_and_resume("chat", out["chat"], 1)
    check_cut_and_resume("completions n=2", out["completions_n2"], 2)
    check_keys(out["keys"])
    check_cancel(out["cancel"])
    check_bad(out["bad"])
    check_expiry(cluster, keys)
    resumes = cluster.gateway_metric("moeserve_gateway_stream_resumes_total")
    check(resumes >= 10, f"moeserve_gateway_stream_resumes_total counted the reconnects ({resumes})")
finally:
    cluster.stop()

print(f"{len(FAILS)} failed")
sys.exit(1 if FAILS else 0)
