# Type stubs of the private extension (generated with pybind11-stubgen, then checked by hand).
"""
pccl_py private core (C++). Use the pccl_py package instead.
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
import typing_extensions
__all__: list[str] = ['Comm', 'DilocoSchedule', 'base58_decode', 'base58_encode', 'build_info', 'dequantize', 'diloco_merge_f32', 'dtype_size', 'encoded_size', 'fedzip_decode', 'fedzip_encode', 'fedzip_mode', 'fedzip_quantize', 'hash64', 'hmac_sha256', 'huffman_codes', 'is_valid_peer_id', 'kmeans_1d', 'load_or_create_identity', 'max_abs_error_bound', 'memory_writable', 'msgpack_roundtrip', 'multiaddr_from_bytes', 'multiaddr_normalize', 'multiaddr_to_bytes', 'outer_step_f32', 'peer_id_from_secret', 'quantize', 'ring_order', 'sha256', 'sparse_decode', 'sparse_encode', 'sparse_sum', 'status_string', 'topk_select', 'topk_target']
class Comm:
    def __init__(self, listen: collections.abc.Sequence[str], bootstrap: collections.abc.Sequence[str], run_key: str, timeout: typing.SupportsFloat | typing.SupportsIndex, join_timeout: typing.SupportsFloat | typing.SupportsIndex, streams: typing.SupportsInt | typing.SupportsIndex, chunk_bytes: typing.SupportsInt | typing.SupportsIndex, key_file: str, tcp_congestion: str, socket_buffer: typing.SupportsInt | typing.SupportsIndex, relay: bool, relays: collections.abc.Sequence[str], hole_punch: bool, relay_slots: typing.SupportsInt | typing.SupportsIndex, relay_limits: tuple, encrypt: bool, heartbeat_timeout: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    def addrs(self) -> list[str]:
        ...
    def all_gather_bytes(self, arg0: bytes, arg1: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def all_reduce(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.SupportsInt | typing.SupportsIndex, arg2: typing.SupportsInt | typing.SupportsIndex, arg3: typing.SupportsInt | typing.SupportsIndex, arg4: typing.SupportsInt | typing.SupportsIndex, arg5: typing.SupportsInt | typing.SupportsIndex, arg6: typing.SupportsInt | typing.SupportsIndex, arg7: typing.SupportsInt | typing.SupportsIndex, arg8: bool, arg9: typing.SupportsInt | typing.SupportsIndex, arg10: bool) -> tuple:
        ...
    def all_reduce_async(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.SupportsInt | typing.SupportsIndex, arg2: typing.SupportsInt | typing.SupportsIndex, arg3: typing.SupportsInt | typing.SupportsIndex, arg4: typing.SupportsInt | typing.SupportsIndex, arg5: typing.SupportsInt | typing.SupportsIndex, arg6: typing.SupportsInt | typing.SupportsIndex, arg7: typing.SupportsInt | typing.SupportsIndex, arg8: bool, arg9: typing.SupportsInt | typing.SupportsIndex, arg10: bool) -> int:
        ...
    def close(self) -> None:
        ...
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
    def sync_state(self, arg0: collections.abc.Sequence[tuple[str, typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex]], arg1: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def update_topology(self) -> None:
        ...
    def wait(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        ...
    def wait_for_peers(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.SupportsFloat | typing.SupportsIndex) -> int:
        ...
    def world_size(self) -> int:
        ...
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
def dtype_size(arg0: typing.SupportsInt | typing.SupportsIndex) -> int:
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
def status_string(arg0: typing.SupportsInt | typing.SupportsIndex) -> str:
    ...
def topk_select(values: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], density: typing.SupportsFloat | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex = 0, sample_rate: typing.SupportsFloat | typing.SupportsIndex = 0.01) -> tuple[numpy.typing.NDArray[numpy.int64], numpy.typing.NDArray[numpy.float32]]:
    """
    Returns (indices int64 ascending, values float32) of about ceil(density*n) largest |values|.
    """
def topk_target(density: typing.SupportsFloat | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def ring_order(ids: collections.abc.Sequence[str], relayed_pairs: collections.abc.Sequence[tuple[str, str]], rtt: collections.abc.Mapping[tuple[str, str], typing.SupportsFloat | typing.SupportsIndex] = {}, current: collections.abc.Sequence[str] = []) -> tuple:
    """The ring order a coordinator commits, and its relayed hops."""
