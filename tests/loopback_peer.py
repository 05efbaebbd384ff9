"""One member for tests/test_loopback_sniff.py's veth case, run inside a
network namespace: listens on argv[1], bootstraps from argv[2] ("-": none),
prints its address, all-reduces (u8 sum) a buffer of argv[3] (hex) repeated,
prints "done" and exits."""

import sys

import numpy as np

import pccl_py as pc

listen, boot, marker = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3])
comm = pc.Communicator(listen=[listen], bootstrap=[] if boot == "-" else [boot], run_key="sniff", timeout=20)
print(comm.addrs[0], flush=True)
comm.wait_for_peers(2, timeout=30)
x = np.frombuffer(marker * (1 << 16), np.uint8).copy()
comm.all_reduce(x)
assert np.array_equal(x, np.frombuffer(marker * (1 << 16), np.uint8) * np.uint8(2))
print("done", flush=True)
comm.all_reduce(np.zeros(1, np.float32))  # neither leaves before the other is done
comm.close()
