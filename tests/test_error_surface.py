"""One error surface: one guard (an exception nobody expected inside an
async op's worker becomes PCCL_ERR_INTERNAL, not a terminated process), each
op's own message (two threads failing at once each see theirs), and every
binding raising the same pccl_py.errors classes (the value errors also
ValueErrors)."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import pccl_py as pc
from pccl_py import _core, compress
from pccl_py.errors import InternalError, InvalidArgumentError, ProtocolError

GUARD_PROGRAM = r"""
import numpy as np
import pccl_py as pc
from pccl_py import _core

comm = pc.Communicator()
x = np.ones(8, np.float32)
_core._testing_throw_in_next_async_worker()
op = comm.all_reduce_async(x)
try:
    op.wait()
    print("no error")
except pc.InternalError as e:
    print("internal", e.status, e)
# The communicator and the process go on: the next ops succeed.
print("after", comm.all_reduce_async(x).wait().world_size, comm.all_reduce(x).world_size)
comm.close()
"""


@pytest.mark.timeout(60)
def test_an_unexpected_exception_in_the_async_worker_is_a_status(tmp_path):
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(pc.__file__)))
    r = subprocess.run([sys.executable, "-c", GUARD_PROGRAM], capture_output=True, text=True, timeout=50,
                       env=dict(os.environ, PYTHONPATH=pkg_parent))
    assert r.returncode == 0, (r.returncode, r.stderr)  # std::terminate would be -SIGABRT
    assert r.stdout.splitlines() == ["internal 10 internal error: unknown exception", "after 1 1"], r.stdout


@pytest.mark.timeout(60)
def test_two_threads_failing_at_once_each_get_their_own_message():
    # Two failures the core finds (in the async worker, and in the blocking
    # call), each with its own message; 200 rounds each, concurrently.
    cases = [(np.ones(8, np.float64), {"quant": "int8"}, "needs f32 data, got f64"),
             (np.ones(8, np.float32), {"quant": "fp16", "op": "max"}, "supports only sum and avg, got max")]
    wrong = [[], []]
    with pc.Communicator() as comm:
        start = threading.Barrier(2)

        def run(me):
            x, kw, expect = cases[me]
            other = cases[1 - me][2]
            start.wait()
            for _ in range(200):
                for call in (lambda: comm.all_reduce_async(x, **kw).wait(), lambda: comm.all_reduce(x, **kw)):
                    try:
                        call()
                        wrong[me].append("no error")
                    except InvalidArgumentError as e:
                        if expect not in str(e) or other in str(e):
                            wrong[me].append(str(e))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        assert not any(t.is_alive() for t in threads)
    assert wrong == [[], []]


@pytest.mark.parametrize("call, cls", [
    (lambda: compress.quantize(np.ones(4, np.float32), "int3"), InvalidArgumentError),
    (lambda: compress.quantize(np.array([1, np.nan], np.float32), "int8"), InvalidArgumentError),
    (lambda: compress.quantize(np.ones(4, np.float32), "int8", 0), InvalidArgumentError),
    (lambda: compress.sparse_decode(b"xx"), ProtocolError),
    (lambda: compress.fedzip_decode(b"FZ\x01\x00\xff"), ProtocolError),
    (lambda: compress.topk_select(np.ones(4, np.float32), 0.0), InvalidArgumentError),
    (lambda: compress.TopK(density=2.0), InvalidArgumentError),
    (lambda: compress.QuantizedTopK.decode(b"xxxxxxxx"), ProtocolError),
    (lambda: _core.multiaddr_to_bytes("/garbage"), InvalidArgumentError),
    (lambda: _core.multiaddr_from_bytes("\x99\x01"), ProtocolError),
    (lambda: _core.base58_decode("0OIl"), InvalidArgumentError),
    (lambda: _core.peer_id_from_secret("ab"), InvalidArgumentError),
    (lambda: _core.DilocoSchedule(0, 1, 0), InvalidArgumentError),
])
def test_codecs_and_utilities_raise_the_communicators_classes(call, cls):
    with pytest.raises(cls) as info:
        call()
    assert type(info.value) is cls  # exactly the class of the status, as the communicator raises it
    assert isinstance(info.value, ValueError) and isinstance(info.value, pc.PcclError)
    assert info.value.status == cls.status and str(info.value)


def test_status_codes_map_to_one_class_each():
    for status in range(11):
        exc = pc.errors.error_for_status(status, "m")
        assert isinstance(exc, pc.PcclError) and str(exc) == "m"
        assert exc.status == (status if status not in (0, 8) else InternalError.status)
    assert not hasattr(pc, "TooFewPeersError")  # its status was never produced: removed
