"""A bare WebSocket client run as a child process, so tests can SIGKILL or SIGSTOP a real peer.

Usage: python raw_client.py URL [awareness-json]. Prints "ready" once connected (after sending
its presence state, if one is given), then reads frames forever.

Flood mode (a hostile observer): python raw_client.py URL --flood N [--state-bytes B]
[--per-frame K] [--pause P] [--seconds S]: registers N fresh awareness clientIDs in messages of K
entries, P seconds apart, prints "ready" after the first round, reads everything it is sent until the
server closes it (printing "closed CODE"), reconnects and floods again until S seconds have passed; prints "done".
"""

import argparse
import json
import socket
import sys
import threading
import time
from urllib.parse import urlparse

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from crdt_server.sync import protocol as p  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("state", nargs="?")
parser.add_argument("--flood", type=int, default=0)
parser.add_argument("--state-bytes", type=int, default=300)
parser.add_argument("--per-frame", type=int, default=10_000)
parser.add_argument("--seconds", type=float, default=0.0)
parser.add_argument("--pause", type=float, default=0.0)
args = parser.parse_args()
url = urlparse(args.url)


def open_socket() -> socket.socket:
    sock = socket.socket()
    # A small fixed receive buffer (it also turns off autotuning) so that a stopped client makes
    # the server's sends block after kilobytes, not after the tens of MB loopback would absorb.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.connect((url.hostname, url.port))
    return sock


def flood_frames(round_no: int) -> list[bytes]:
    pad = "x" * max(0, args.state_bytes - 40)
    frames, entries = [], []
    for i in range(args.flood):
        cid = 1_000_000 + round_no * args.flood + i
        entries.append(p.AwarenessEntry(cid, 1, json.dumps({"user": {"name": f"f{i}"}, "p": pad}).encode()))
        if len(entries) == args.per_frame:
            frames.append(p.awareness_frame(entries))
            entries = []
    if entries:
        frames.append(p.awareness_frame(entries))
    return frames


if not args.flood:
    with connect(args.url, sock=open_socket(), max_size=None) as ws:
        ws.recv()  # the server's sync step 1
        if args.state:
            ws.send(p.awareness_frame([p.AwarenessEntry(424242, 1, args.state.encode())]))
        print("ready", flush=True)
        while True:
            ws.recv()

def drain(ws: ClientConnection, closed: list[int | None]) -> None:
    """Read everything the server sends (an observer that keeps up), until it closes."""
    try:
        while True:
            ws.recv()
    except ConnectionClosed as exc:
        closed.append(exc.rcvd.code if exc.rcvd is not None else None)


deadline = time.monotonic() + args.seconds
round_no = 0
announced = False
while True:
    frames = flood_frames(round_no)
    closed: list[int | None] = []
    with connect(args.url, max_size=None) as ws:
        ws.recv()
        reader = threading.Thread(target=drain, args=(ws, closed), daemon=True)
        reader.start()
        try:
            for frame in frames:
                ws.send(frame)
                time.sleep(args.pause)
        except ConnectionClosed:
            pass
        if not announced:
            announced = True
            print("ready", flush=True)
        reader.join(max(0.0, deadline - time.monotonic()))
    reader.join(5)
    if closed:
        print(f"closed {closed[0]}", flush=True)
    round_no += 1
    if time.monotonic() >= deadline:
        break
    time.sleep(0.05)
print("done", flush=True)
