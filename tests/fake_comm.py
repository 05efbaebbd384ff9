"""An in-process fake communicator for compression tests: W workers run in
lockstep threads and meet at a barrier for every collective. Results are
computed in rank order, so every worker gets bit-identical values, like the
real ring. Not part of the package."""
from __future__ import annotations

import threading
from typing import Any, Callable, List


class FakeWorld:
    def __init__(self, world_size: int, timeout: float = 30.0):
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=timeout)
        self._slots: List[Any] = [None] * world_size
        self.comms = [FakeComm(self, r) for r in range(world_size)]
        self.gathers: List[List[bytes]] = []  # every all_gather_bytes result, recorded once

    def _exchange(self, rank: int, item: Any) -> List[Any]:
        self._slots[rank] = item
        self._barrier.wait()
        out = list(self._slots)
        if rank == 0 and isinstance(item, bytes):
            self.gathers.append(out)
        self._barrier.wait()  # nobody overwrites a slot before all have read
        return out

    def run(self, fn: Callable[["FakeComm"], Any]) -> List[Any]:
        """Runs fn(comm) on every worker in its own thread; returns the results
        in rank order, or re-raises the first worker exception."""
        results: List[Any] = [None] * self.world_size
        errors: List[BaseException] = []

        def body(comm: FakeComm) -> None:
            try:
                results[comm.rank] = fn(comm)
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                errors.append(e)
                self._barrier.abort()  # release the others instead of hanging

        threads = [threading.Thread(target=body, args=(c,)) for c in self.comms]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


class FakeComm:
    def __init__(self, world: FakeWorld, rank: int):
        self.world = world
        self.rank = rank
        self.world_size = world.world_size
        self.tx_bytes = 0

    def all_gather_bytes(self, data: bytes) -> List[bytes]:
        self.tx_bytes += len(data)
        return self.world._exchange(self.rank, bytes(data))

    def all_reduce(self, tensor: Any, op: str = "sum") -> None:
        if op != "sum":
            raise ValueError(f"fake all_reduce supports only sum, got {op!r}")
        self.tx_bytes += tensor.numel() * tensor.element_size()
        parts = self.world._exchange(self.rank, tensor.detach().clone())
        total = parts[0].clone()
        for p in parts[1:]:
            total += p
        tensor.copy_(total)
