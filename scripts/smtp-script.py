#!/usr/bin/env python3
"""A scripted SMTP server: answers each recipient as
tests/fixtures/mta/replies.tsv says (at RCPT TO, or after DATA), every other
command with a plain success. The Rust test `tests/it/real_mta.rs` has its
own copy of this behaviour; this one serves `scripts/exim-fixtures`.

usage: smtp-script.py [ADDRESS] [PORT]   (default 127.0.0.2 2525)"""
import os
import socketserver
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE = os.path.join(HERE, "..", "tests", "fixtures", "mta", "replies.tsv")


def script():
    replies = {}
    with open(TABLE, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            local, when, _kind, _hard, reply = line.rstrip("\n").split("\t", 4)
            replies[local.lower()] = (when == "data", reply.replace("\\n", "\r\n"))
    return replies


REPLIES = script()


class Session(socketserver.StreamRequestHandler):
    def say(self, text):
        self.wfile.write((text + "\r\n").encode())

    def handle(self):
        self.say("220 mx.example.test ESMTP scripted")
        at_data, accepted = None, 0
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            upper = line.upper()
            if upper.startswith(("EHLO", "HELO")):
                self.say("250 mx.example.test")
            elif upper.startswith("MAIL FROM"):
                at_data, accepted = None, 0
                self.say("250 2.1.0 Ok")
            elif upper.startswith("RCPT TO"):
                local = line.split("<", 1)[-1].split("@", 1)[0].lower()
                data, reply = REPLIES.get(local, (False, None))
                if reply is not None and not data:
                    self.say(reply)
                else:
                    if data:
                        at_data = reply
                    accepted += 1
                    self.say("250 2.1.5 Ok")
            elif upper == "DATA":
                if accepted == 0:
                    self.say("554 5.5.1 No valid recipients")
                    continue
                self.say("354 go ahead")
                while True:
                    l = self.rfile.readline()
                    if not l or l.rstrip(b"\r\n") == b".":
                        break
                self.say(at_data or "250 2.0.0 Ok: queued")
            elif upper == "QUIT":
                self.say("221 2.0.0 Bye")
                return
            elif upper in ("RSET", "NOOP"):
                self.say("250 2.0.0 Ok")
            else:
                self.say("502 5.5.2 Error: command not recognized")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.2"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 2525
    with Server((address, port), Session) as s:
        s.serve_forever()
