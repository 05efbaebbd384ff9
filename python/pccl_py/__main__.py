"""Command line: ``python -m pccl_py demo|peer ...`` (console script ``pccl-py``)."""

from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: pccl-py <command> [options]

commands:
  demo    DiLoCo across local peer processes: a peer killed, one joining, vs data parallel
  peer    one demo peer (started by demo)
"""


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    from . import demo
    if cmd == "demo":
        return demo.demo_main(rest)
    if cmd == "peer":
        return demo.peer_main(rest)
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
