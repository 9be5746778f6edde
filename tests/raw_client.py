"""A bare WebSocket client run as a child process, so tests can SIGKILL or SIGSTOP a real peer.

Usage: python raw_client.py URL [awareness-json]. Prints "ready" once connected (after sending
its presence state, if one is given), then reads frames forever.
"""

import socket
import sys
from urllib.parse import urlparse

from websockets.sync.client import connect

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from crdt_server.sync import protocol as p  # noqa: E402

url = urlparse(sys.argv[1])
sock = socket.socket()
# A small fixed receive buffer (it also turns off autotuning) so that a stopped client makes
# the server's sends block after kilobytes, not after the tens of MB loopback would absorb.
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
sock.connect((url.hostname, url.port))

with connect(sys.argv[1], sock=sock, max_size=None) as ws:
    ws.recv()  # the server's sync step 1
    if len(sys.argv) > 2:
        ws.send(p.awareness_frame([p.AwarenessEntry(424242, 1, sys.argv[2].encode())]))
    print("ready", flush=True)
    while True:
        ws.recv()
