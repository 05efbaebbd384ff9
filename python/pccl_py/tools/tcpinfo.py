"""The kernel's TCP_INFO of established connections, read with ``ss -tin``.

    from pccl_py.tools import tcpinfo
    for s in tcpinfo.streams(ports={7000}):   # connections with a local or remote port in the set
        print(s["local"], s["remote"], s["cc"], s["cwnd"], s["bytes_acked"])

What a sender's window is after an idle gap is only visible in the kernel;
bench/wan.py --cwnd and the keep-alive tests read it here. Linux applies its
restart after idle lazily, when the connection next sends, so a window read
during a gap without any traffic is the one from before it.

Each stream is a dict: local and remote ("ip:port"), cc (the congestion
control), and the integers cwnd (segments), bytes_acked (bytes this end sent
that were acknowledged: large on the sending end of a data stream),
data_segs_out, segs_out, plus rtt_ms and rto_ms (floats). Missing fields are
0. ``netns``: read inside that network namespace (``ip netns exec``, root).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Iterable, Optional

_INT_FIELDS = ("cwnd", "bytes_acked", "data_segs_out", "segs_out")


def available() -> bool:
    """Whether ``ss`` (iproute2) is on this machine."""
    return shutil.which("ss") is not None


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def parse(text: str) -> list[dict]:
    """Streams from the output of ``ss -tinH state established``."""
    out: list[dict] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # "<recv-q> <send-q> <local> <remote>"
            parts = line.split()
            out.append({"local": parts[-2], "remote": parts[-1], "cc": "", "rtt_ms": 0.0, "rto_ms": 0.0,
                        **{k: 0 for k in _INT_FIELDS}})
            continue
        if not out:
            continue
        s = out[-1]
        words = line.split()
        if words and ":" not in words[0]:
            s["cc"] = words[0]
        for k in _INT_FIELDS:
            m = re.search(rf"(?<![\w]){k}:(\d+)", line)
            if m:
                s[k] = int(m.group(1))
        m = re.search(r"\brtt:([\d.]+)/", line)
        if m:
            s["rtt_ms"] = float(m.group(1))
        m = re.search(r"\brto:([\d.]+)", line)
        if m:
            s["rto_ms"] = float(m.group(1))
    return out


def streams(ports: Optional[Iterable[int]] = None, netns: Optional[str] = None) -> list[dict]:
    """Established TCP connections (see the module docstring), optionally only
    those with a local or remote port in ``ports``."""
    argv = ["ss", "-tinH", "state", "established"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    text = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    out = parse(text)
    if ports is not None:
        want = set(ports)
        out = [s for s in out if _port(s["local"]) in want or _port(s["remote"]) in want]
    return out


def sending(all_streams: list[dict], min_bytes: int = 64 << 10) -> list[dict]:
    """The streams whose end here has sent at least ``min_bytes`` (acknowledged):
    the sending ends of data streams, not control links or receiving ends."""
    return [s for s in all_streams if s["bytes_acked"] >= min_bytes]
