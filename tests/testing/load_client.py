"""A small HTTP client for chaos and soak runs against a moeserve gateway: one request at a time,
classified by what the client saw, plus /proc and /metrics readers.

Outcomes (Result.kind):
  ok         HTTP 200 and a complete answer (a finish_reason, and [DONE] when streaming)
  error      a clean error: HTTP 4xx/5xx with an OpenAI error body, or an SSE error event
  cancelled  the client hung up on purpose (cancel_after)
  refused    the connection was refused: the request was never accepted
  lost       accepted but neither answered nor failed cleanly: a dropped connection, a stream
             that ends without a finish reason or [DONE] (silent truncation), or no answer
             within the timeout (a hang)
Python stdlib only."""
import http.client
import json
import os
import socket
import time
import urllib.request


class Result:
    def __init__(self, kind, status=0, text="", finish=None, error="", t0=0.0, t1=0.0,
                 usage=None, events=0):
        self.kind = kind
        self.status = status
        self.text = text
        self.finish = finish
        self.error = error
        self.t0 = t0
        self.t1 = t1
        self.usage = usage or {}
        self.events = events

    def __repr__(self):
        return (f"Result({self.kind}, status={self.status}, finish={self.finish}, "
                f"text={self.text[:40]!r}, error={self.error[:120]!r})")


def _error_message(body):
    try:
        return json.loads(body)["error"]["message"] or ""
    except (ValueError, KeyError, TypeError):
        return ""


def _delta_text(event):
    out = []
    for c in event.get("choices") or []:
        d = c.get("delta") or {}
        out.append((d.get("reasoning_content") or "") + (d.get("content") or ""))
    return "".join(out)


def chat(port, body, timeout=90.0, cancel_after=None, path="/v1/chat/completions"):
    """One chat completion (streaming when body["stream"]); returns a Result. With cancel_after
    (streaming only), closes the connection after that many events."""
    t0 = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
    except ConnectionRefusedError as e:
        conn.close()
        return Result("refused", error=str(e), t0=t0, t1=time.time())
    except OSError as e:
        conn.close()
        return Result("lost", error=f"send: {e}", t0=t0, t1=time.time())
    try:
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        return Result("lost", error=f"no response: {e!r}", t0=t0, t1=time.time())
    try:
        if resp.status != 200:
            raw = resp.read().decode(errors="replace")
            msg = _error_message(raw)
            kind = "error" if msg and resp.status >= 400 else "lost"
            return Result(kind, resp.status, error=msg or raw[:200], t0=t0, t1=time.time())
        if not body.get("stream"):
            raw = resp.read().decode(errors="replace")
            try:
                doc = json.loads(raw)
                choice = doc["choices"][0]
                text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
                reasoning = (choice.get("message") or {}).get("reasoning_content") or ""
                finish = choice.get("finish_reason")
            except (ValueError, KeyError, TypeError, IndexError):
                return Result("lost", 200, error=f"malformed body {raw[:200]!r}", t0=t0,
                              t1=time.time())
            kind = "ok" if finish else "lost"
            return Result(kind, 200, reasoning + text, finish, t0=t0, t1=time.time(),
                          usage=doc.get("usage"))
        return _read_stream(resp, t0, cancel_after)
    except (OSError, http.client.HTTPException) as e:
        return Result("lost", resp.status, error=f"read: {e!r}", t0=t0, t1=time.time())
    finally:
        conn.close()


def _read_stream(resp, t0, cancel_after):
    text, finish, error, usage, events, done = [], None, "", {}, 0, False
    try:
        for raw in resp:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                ev = json.loads(data)
            except ValueError:
                return Result("lost", 200, "".join(text), error=f"bad event {data[:100]!r}",
                              t0=t0, t1=time.time(), events=events)
            events += 1
            if "error" in ev:
                error = (ev["error"] or {}).get("message") or "error event without a message"
                continue
            text.append(_delta_text(ev))
            for c in ev.get("choices") or []:
                finish = c.get("finish_reason") or finish
            if ev.get("usage"):
                usage = ev["usage"]
            if cancel_after is not None and events >= cancel_after:
                return Result("cancelled", 200, "".join(text), t0=t0, t1=time.time(),
                              events=events)
    except (OSError, http.client.HTTPException) as e:
        if error:
            return Result("error", 200, "".join(text), error=error, t0=t0, t1=time.time(),
                          events=events)
        return Result("lost", 200, "".join(text), error=f"stream dropped: {e!r}", t0=t0,
                      t1=time.time(), events=events)
    if error:
        return Result("error", 200, "".join(text), error=error, t0=t0, t1=time.time(),
                      events=events)
    if not done or not finish:
        return Result("lost", 200, "".join(text), finish,
                      error=f"stream ended without {'[DONE]' if not done else 'a finish_reason'}",
                      t0=t0, t1=time.time(), events=events)
    return Result("ok", 200, "".join(text), finish, t0=t0, t1=time.time(), usage=usage,
                  events=events)


def metrics(address, timeout=10.0):
    """Scrapes a Prometheus endpoint: {series (name plus labels): value}."""
    out = {}
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as r:
        for line in r.read().decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def rss_kb(pid):
    """VmRSS of a process in KiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def wait_port(port, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
