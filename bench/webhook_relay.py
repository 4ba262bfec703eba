"""The relay app (crates/gatehouse-apps/src/relay.rs) as a webhook backend, for the webhook
benchmark (bench/webhook.py): login binds a uid and answers login_ok, join joins a group and
answers join_ok, a frame with "to" goes unchanged to that uid, with "group" to that group, with
"type":"broadcast" to everyone. Python 3 standard library only; every request's signature is
checked, as a real backend would.

    GATEHOUSE_WEBHOOK_SECRET=… python3 bench/webhook_relay.py [PORT]
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["GATEHOUSE_WEBHOOK_SECRET"].encode()


def verified(header, body):
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(SECRET, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(time.time() - stamp) <= 300 and hmac.compare_digest(expected, fields.get("v1", ""))


def error(message):
    return {"commands": [{"cmd": "reply", "json": {"type": "error", "message": message}}]}


def relay(event):
    if event["type"] != "message":
        return None
    text = event.get("text")
    try:
        frame = json.loads(text)
    except (TypeError, ValueError):
        return error("malformed json")
    if not isinstance(frame, dict):
        return error("malformed json")
    kind = frame.get("type")
    if kind == "login" and isinstance(frame.get("uid"), str):
        uid = frame["uid"]
        return {"commands": [{"cmd": "bind_uid", "uid": uid},
                             {"cmd": "reply", "json": {"type": "login_ok", "uid": uid}}]}
    if kind == "join" and isinstance(frame.get("group"), str):
        group = frame["group"]
        return {"commands": [{"cmd": "join_group", "group": group},
                             {"cmd": "reply", "json": {"type": "join_ok", "group": group}}]}
    if isinstance(frame.get("to"), str):
        return {"commands": [{"cmd": "send_to_uid", "uid": frame["to"], "text": text}]}
    if isinstance(frame.get("group"), str):
        return {"commands": [{"cmd": "send_to_group", "group": frame["group"], "text": text}]}
    if kind == "broadcast":
        return {"commands": [{"cmd": "send_to_all", "text": text}]}
    return error("expected login, join, or a frame with to, group or type broadcast")


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verified(self.headers.get("Gatehouse-Signature", ""), body):
            return self.answer(401, b'{"error":"bad signature"}')
        results = [relay(event) for event in json.loads(body)["events"]]
        self.answer(200, json.dumps({"results": results}).encode())

    def answer(self, status, data):
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
