# Type stubs of the private extension (generated with pybind11-stubgen, then edited by hand;
# tests/test_options_path.py checks that they name exactly what the module defines).
"""
pccl_py private core (C++). Use the pccl_py package instead.
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['Algorithm', 'AllReduceOpts', 'Comm', 'Config', 'DType', 'DilocoSchedule', 'Quant', 'ReduceOp', 'RingOrder', 'Status', 'base58_decode', 'base58_encode', 'build_info', 'choose_algorithm', 'codecs', 'dequantize', 'diloco_merge_f32', 'dtype_size', 'encoded_size', 'fedzip_decode', 'fedzip_encode', 'fedzip_mode', 'fedzip_quantize', 'hash64', 'hmac_sha256', 'huffman_codes', 'is_valid_peer_id', 'kmeans_1d', 'load_or_create_identity', 'max_abs_error_bound', 'memnet', 'memory_writable', 'msgpack_roundtrip', 'multiaddr_from_bytes', 'multiaddr_normalize', 'multiaddr_to_bytes', 'one_host', 'outer_step_f32', 'peer_id_from_secret', 'quantize', 'ring_order', 'sha256', 'sparse_decode', 'sparse_encode', 'sparse_sum', 'status_string', 'topk_select', 'topk_target']
class _CEnum:
    """What pybind11's py::enum_ gives each C enum below."""
    name: str
    value: int
    __members__: typing.ClassVar[dict[str, typing.Any]]
    def __init__(self, value: typing.SupportsInt) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
class Status(_CEnum):
    """pccl_status_t"""
    ok: typing.ClassVar[Status]
    invalid_argument: typing.ClassVar[Status]
    invalid_usage: typing.ClassVar[Status]
    peer_lost: typing.ClassVar[Status]
    timeout: typing.ClassVar[Status]
    auth_failed: typing.ClassVar[Status]
    io: typing.ClassVar[Status]
    protocol: typing.ClassVar[Status]
    closed: typing.ClassVar[Status]
    internal: typing.ClassVar[Status]
class DType(_CEnum):
    """pccl_dtype_t"""
    f32: typing.ClassVar[DType]
    f64: typing.ClassVar[DType]
    f16: typing.ClassVar[DType]
    bf16: typing.ClassVar[DType]
    i8: typing.ClassVar[DType]
    i16: typing.ClassVar[DType]
    i32: typing.ClassVar[DType]
    i64: typing.ClassVar[DType]
    u8: typing.ClassVar[DType]
    u16: typing.ClassVar[DType]
    u32: typing.ClassVar[DType]
    u64: typing.ClassVar[DType]
class ReduceOp(_CEnum):
    """pccl_reduce_op_t"""
    sum: typing.ClassVar[ReduceOp]
    avg: typing.ClassVar[ReduceOp]
    min: typing.ClassVar[ReduceOp]
    max: typing.ClassVar[ReduceOp]
    prod: typing.ClassVar[ReduceOp]
class Algorithm(_CEnum):
    """pccl_algorithm_t"""
    ring: typing.ClassVar[Algorithm]
    direct: typing.ClassVar[Algorithm]
    doubling: typing.ClassVar[Algorithm]
    auto: typing.ClassVar[Algorithm]
class RingOrder(_CEnum):
    """pccl_ring_order_t"""
    measured: typing.ClassVar[RingOrder]
    id: typing.ClassVar[RingOrder]
class Quant(_CEnum):
    """pccl_quant_t: one member per entry of the codec table"""
    none: typing.ClassVar[Quant]
    fp16: typing.ClassVar[Quant]
    bf16: typing.ClassVar[Quant]
    int8: typing.ClassVar[Quant]
    int4: typing.ClassVar[Quant]
    e3m0: typing.ClassVar[Quant]
class Config:
    """pccl_config_t, field by field; a new one holds pccl_config_init's defaults."""
    listen: list[str]
    bootstrap: list[str]
    run_key: bytes
    timeout_s: float
    join_timeout_s: float
    streams: int
    chunk_bytes: int
    key_file: str | None
    tcp_congestion: str | None
    socket_buffer: int
    relay: bool
    relays: list[str]
    hole_punch: bool
    relay_slots: int
    relay_max_reservations: int
    relay_max_circuits: int
    relay_max_circuit_bytes: int
    relay_max_circuit_s: float
    relay_reservation_ttl_s: float
    encrypt: bool
    handshake_timeout_s: float
    heartbeat_timeout_s: float
    ring_order: RingOrder
    keepalive_s: float
    seal_loopback: bool
    def __init__(self) -> None: ...
    @property
    def struct_size(self) -> int: ...
class AllReduceOpts:
    """pccl_allreduce_opts_t; keyword defaults are pccl_allreduce_opts_init's."""
    op: ReduceOp
    tag: int
    quant: Quant
    quant_block: int
    stochastic: bool
    algorithm: Algorithm
    no_backup: bool
    def __init__(self, *, op: ReduceOp = ..., tag: typing.SupportsInt = 0, quant: Quant = ..., quant_block: typing.SupportsInt = 128, stochastic: bool = False, algorithm: Algorithm = ..., no_backup: bool = False) -> None: ...
    @property
    def struct_size(self) -> int: ...
class Comm:
    def __init__(self, config: Config) -> None:
        ...
    def addrs(self) -> list[str]:
        ...
    def all_gather_bytes(self, data: bytes, tag: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def all_reduce(self, send: typing.SupportsInt, recv: typing.SupportsInt, count: typing.SupportsInt, dtype: DType, opts: AllReduceOpts) -> tuple:
        ...
    def all_reduce_async(self, send: typing.SupportsInt, recv: typing.SupportsInt, count: typing.SupportsInt, dtype: DType, opts: AllReduceOpts) -> int:
        """Returns an op handle for wait()."""
    def close(self) -> None:
        ...
    def _testing_hold_membership_lock(self, seconds: typing.SupportsFloat | typing.SupportsIndex) -> None:
        """
        Test only: holds the mesh's membership lock for `seconds` on this thread, as a slow view change would (pccl_py.testing.hold_membership_lock).
        """
    def connections(self) -> list[str]:
        ...
    def epoch(self) -> int:
        ...
    def members(self) -> list[str]:
        ...
    def peer_id(self) -> str:
        ...
    def reservations(self) -> list[str]:
        ...
    def reachability(self) -> str:
        ...
    def sync_state(self, tensors: collections.abc.Sequence[tuple[str, typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex]], revision: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def update_topology(self) -> None:
        ...
    def wait(self, handle: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def wait_for_peers(self, n: typing.SupportsInt | typing.SupportsIndex, timeout: typing.SupportsFloat | typing.SupportsIndex) -> int:
        ...
    def world_size(self) -> int:
        ...
def choose_algorithm(nbytes: typing.SupportsInt | typing.SupportsIndex, world: typing.SupportsInt | typing.SupportsIndex, opts: AllReduceOpts) -> Algorithm:
    """The algorithm an all-reduce of nbytes over world members runs with opts (resolves auto)."""
def codecs() -> list[dict[str, typing.Any]]:
    """The codec table: one dict (name, id, blocked, stochastic, summary) per codec, in id order."""
def _testing_throw_in_next_async_worker() -> None:
    """Test only: the next all_reduce_async's worker throws a non-std exception."""
def _simulate(seed: typing.SupportsInt, peers: typing.SupportsInt, rounds: typing.SupportsInt = 3, faults: typing.SupportsInt = -1, kinds: str = 'kill,freeze,partition,slow,join', timeout_s: typing.SupportsFloat = 10.0, heartbeat_s: typing.SupportsFloat = 3.0, delay_min_s: typing.SupportsFloat = 0.001, delay_max_s: typing.SupportsFloat = 0.03, rate_Bps: typing.SupportsFloat = 12500000.0, break_commit: bool = False) -> dict[str, typing.Any]:
    """One seeded run of the protocol simulator (tests and bench/simulate.py only; see sim/simulator.h)."""
class DilocoSchedule:
    def __init__(self, sync_every: typing.SupportsInt | typing.SupportsIndex, fragments: typing.SupportsInt | typing.SupportsIndex, overlap_steps: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def fragment_to_apply(self, step: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def fragment_to_start(self, step: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def start_step(self, fragment: typing.SupportsInt | typing.SupportsIndex, round: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    @property
    def fragments(self) -> int:
        ...
    @property
    def overlap_steps(self) -> int:
        ...
    @property
    def sync_every(self) -> int:
        ...
def base58_decode(text: str) -> bytes:
    ...
def base58_encode(data: str) -> str:
    ...
def build_info() -> str:
    ...
def dequantize(data: bytes, count: typing.SupportsInt | typing.SupportsIndex, kind: str = 'int8', block: typing.SupportsInt | typing.SupportsIndex = 128) -> numpy.typing.NDArray[numpy.float32]:
    ...
def diloco_merge_f32(local_ptr: typing.SupportsInt | typing.SupportsIndex, global_ptr: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, alpha: typing.SupportsFloat | typing.SupportsIndex) -> None:
    ...
def dtype_size(dtype: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def encoded_size(count: typing.SupportsInt | typing.SupportsIndex, kind: str = 'int8', block: typing.SupportsInt | typing.SupportsIndex = 128) -> int:
    ...
def fedzip_decode(data: bytes, n: typing.SupportsInt | typing.SupportsIndex | None = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    The dense tensor of a blob. n: its expected length (checked before allocating); without it the blob may describe at most 4096 values per byte.
    """
def fedzip_encode(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], density: typing.SupportsFloat | typing.SupportsIndex, clusters: typing.SupportsInt | typing.SupportsIndex = 3) -> bytes:
    ...
def fedzip_mode(data: bytes) -> int:
    """
    0: Huffman symbols + one position list, 1: per-cluster position lists.
    """
def fedzip_quantize(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], density: typing.SupportsFloat | typing.SupportsIndex, clusters: typing.SupportsInt | typing.SupportsIndex = 3) -> numpy.typing.NDArray[numpy.float32]:
    """
    The tensor fedzip_decode(fedzip_encode(...)) restores.
    """
def hash64(data: typing_extensions.Buffer, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> int:
    """
    XXH64 of the bytes (non-cryptographic).
    """
def hmac_sha256(key: typing_extensions.Buffer, msg: typing_extensions.Buffer) -> bytes:
    """
    HMAC-SHA256 (32 bytes).
    """
def huffman_codes(freqs: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> list[tuple[int, int]]:
    """
    Canonical Huffman (code, length) per symbol; length 0 for unused symbols.
    """
def memory_writable(ptr: typing.SupportsInt | typing.SupportsIndex, nbytes: typing.SupportsInt | typing.SupportsIndex) -> bool:
    """
    True when [ptr, ptr + nbytes) is mapped writable in this process.
    """
def is_valid_peer_id(peer_id: str) -> bool:
    ...
def kmeans_1d(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], k: typing.SupportsInt | typing.SupportsIndex = 3, iterations: typing.SupportsInt | typing.SupportsIndex = 30) -> numpy.typing.NDArray[numpy.float32]:
    ...
def load_or_create_identity(path: str) -> str:
    """
    Peer id from the key file at path, creating the file if missing.
    """
def max_abs_error_bound(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], kind: str = 'int8', block: typing.SupportsInt | typing.SupportsIndex = 128, stochastic: bool = False) -> float:
    ...
def msgpack_roundtrip(data: str) -> bytes:
    """
    Decode msgpack bytes and encode them again (smallest forms).
    """
def multiaddr_from_bytes(data: str) -> str:
    ...
def multiaddr_normalize(text: str) -> str:
    """
    Parse and print a multiaddr in canonical form.
    """
def multiaddr_to_bytes(text: str) -> bytes:
    ...
def outer_step_f32(global_ptr: typing.SupportsInt | typing.SupportsIndex, pseudograd_ptr: typing.SupportsInt | typing.SupportsIndex, momentum_ptr: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, lr: typing.SupportsFloat | typing.SupportsIndex, momentum: typing.SupportsFloat | typing.SupportsIndex, nesterov: bool) -> None:
    ...
def peer_id_from_secret(secret: str) -> str:
    ...
def quantize(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], kind: str = 'int8', block: typing.SupportsInt | typing.SupportsIndex = 128, stochastic: bool = False, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> bytes:
    """
    Quantizes a flat float32 array; returns encoded_size(...) bytes.
    """
def sha256(data: typing_extensions.Buffer) -> bytes:
    """
    SHA-256 digest (32 bytes).
    """
def sparse_decode(data: bytes) -> tuple:
    """
    Returns (indices int64, values float32, n).
    """
def sparse_encode(indices: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], n: typing.SupportsInt | typing.SupportsIndex, fp16: bool = False) -> bytes:
    ...
def sparse_sum(sets: list, n: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.float32]:
    """
    Dense float32 sum of the sparse sets, added in list order.
    """
def status_string(status: typing.SupportsInt | typing.SupportsIndex) -> str:
    ...
def topk_select(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], density: typing.SupportsFloat | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex = 0, sample_rate: typing.SupportsFloat | typing.SupportsIndex = 0.01) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]:
    """
    Returns (indices int64 ascending, values float32) of about ceil(density*n) largest |values|.
    """
def topk_target(density: typing.SupportsFloat | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def ring_order(ids: collections.abc.Sequence[str], relayed_pairs: collections.abc.Sequence[tuple[str, str]], rtt: collections.abc.Mapping[tuple[str, str], typing.SupportsFloat | typing.SupportsIndex] = {}, current: collections.abc.Sequence[str] = []) -> tuple:
    """The ring order a coordinator commits, and its relayed hops."""

def one_host(addrs: collections.abc.Sequence[collections.abc.Sequence[str]]) -> bool:
    """Whether a view whose members advertise `addrs` is on one machine."""

class memnet:
    """Fault injection on the in-memory transport (/memory/<n>): tests only."""
    @staticmethod
    def drop_links(a: str, b: str) -> int: ...
    @staticmethod
    def freeze(peer: str, frozen: bool = True) -> None: ...
    @staticmethod
    def heal() -> None: ...
    @staticmethod
    def inject(src: str, dst: str, data: bytes) -> bool: ...
    @staticmethod
    def kill(peer: str) -> None: ...
    @staticmethod
    def partition(groups: collections.abc.Sequence[collections.abc.Sequence[str]]) -> None: ...
    @staticmethod
    def reset() -> None: ...
    @staticmethod
    def set_delay(src: str, dst: str, seconds: typing.SupportsFloat | typing.SupportsIndex) -> None: ...
