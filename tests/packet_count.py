"""Counts packets on an interface (argv[1]) and those holding argv[2] (hex)
until a line arrives on stdin; prints "up" when listening, then
"<packets> <with marker>". For tests/test_loopback_sniff.py inside a netns."""

import select
import socket
import sys

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
marker = bytes.fromhex(sys.argv[2])
packets = seen = 0
print("up", flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [], 1.0)
    if sys.stdin in ready:
        break
    if s in ready:
        p = s.recv(1 << 17)
        packets += 1
        seen += marker in p
print(packets, seen, flush=True)
