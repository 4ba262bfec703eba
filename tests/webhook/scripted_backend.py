"""A webhook backend whose behaviour the tests steer: it echoes every text message back as a
`reply` command ("echo:" + text), and can answer 500, answer slowly, or be killed and started
again on the same port. Python 3 standard library only.

Every request's signature is checked (HMAC-SHA256 of "<t>.<body>" with GATEHOUSE_WEBHOOK_SECRET,
timestamp within 300 s); a bad one is answered 401 and counted. Every event received is
appended as one JSON line to EVENTS_FILE (it survives a restart), before the mode is applied.

Test-only endpoints (unsigned, loopback): POST /control {"mode": "ok"|"fail"|"slow",
"delay_ms": N} and GET /state.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["GATEHOUSE_WEBHOOK_SECRET"].encode()
EVENTS_FILE = os.environ["EVENTS_FILE"]
LOCK = threading.Lock()
STATE = {"mode": os.environ.get("MODE", "ok"), "delay_ms": 0, "requests": 0, "answered": 0,
         "bad_signatures": 0, "max_batch": 0}


def verified(headers, body):
    try:
        fields = dict(part.split("=", 1) for part in headers.get("Gatehouse-Signature", "").split(","))
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - stamp) <= 300 and hmac.compare_digest(expected, fields.get("v1", ""))


def result(event):
    if event["type"] == "handshake" and "reject=1" in event["query"].split("&"):
        return {"reject": {"status": 403, "reason": "not today"}}
    if event["type"] == "message" and "text" in event:
        return {"commands": [{"cmd": "reply", "text": "echo:" + event["text"]}]}
    return None


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with LOCK:
            self.answer(200, dict(STATE))

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/control":
            with LOCK:
                STATE.update(json.loads(body))
            return self.answer(200, {})
        if not verified(self.headers, body):
            with LOCK:
                STATE["bad_signatures"] += 1
            return self.answer(401, {"error": "bad signature"})
        events = json.loads(body)["events"]
        with LOCK:
            STATE["requests"] += 1
            STATE["max_batch"] = max(STATE["max_batch"], len(events))
            mode, delay = STATE["mode"], STATE["delay_ms"]
            with open(EVENTS_FILE, "a", encoding="utf-8") as log:
                for event in events:
                    log.write(json.dumps({"client": event["client"], "type": event["type"],
                                          "text": event.get("text")}) + "\n")
        if mode == "fail":
            return self.answer(500, {"error": "told to fail"})
        if mode == "slow":
            time.sleep(delay / 1000)
        with LOCK:
            STATE["answered"] += 1
        self.answer(200, {"results": [result(event) for event in events]})

    def answer(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Backend)
server.daemon_threads = True
print(f"listening addr=127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
