"""The order in which the linker processes what the nodes send: capture time across producers.

The linker's decisions depend on the order of the sighting batches it sees (a track matches the
identities that exist when it is decided). Several producers send over separate sockets, so the
order in which their messages *arrive* depends on process scheduling; processing in arrival order
made a replay's identities differ from run to run. This module puts a deterministic order between
the sockets and the linker:

- **Replay** (:class:`ReplayMerge`): a k-way merge of the producers' streams. Every producer's
  messages are queued in the order they arrived from it (one ZeroMQ connection keeps a producer's
  order, and a replaying node sends the same sequence every run). The head with the smallest key
  ``(capture_ts, producer_id, camera_id, seq)`` is released only while *every* producer still
  streaming has a head queued, i.e. the linker advances to the minimum of the producers' latest
  capture times; a producer's final end-of-stream releases it. Until ``expected_producers``
  producers have been heard from, nothing is released (a producer that starts late cannot have its
  early sightings overtaken). The merged order is a function of the producers' streams alone, so
  the same inputs give the same events whatever the scheduling. Memory: what a producer sends
  ahead of the slowest one is held here; beyond ``replay_max_buffered`` messages the smallest head
  is released anyway (counted as ``forced_releases``: that replay is no longer guaranteed
  deterministic, and the stats say so).
- **Live** (:class:`LiveReorder`): a bounded reorder window. A message is held until the newest
  capture time seen is ``reorder_window_s`` past it, or it has waited that long on the linker's
  monotonic clock (a quiet camera does not hold the others back), then released in key order. A
  message older than one already released is *late*: counted and processed at once.

End-of-stream messages carry the sender's wall clock as ``capture_ts``; they are keyed by the last
capture time of their camera's stream (camera end) or sorted after everything (producer end), so a
camera ends where its stream ended. Heartbeats bypass the order (they change no identity).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.messages import Decoded, EndOfStream, SightingBatch

__all__ = ["Arrival", "LiveReorder", "OrderingSettings", "ReplayMerge", "make_intake"]

OrderKey = tuple[float, str, str, int]


@dataclass
class OrderingSettings:
    """How the linker orders its input (the ``ordering`` section of the linker config).

    Attributes:
        reorder_window_s: live mode: how long (s, capture time and linker clock) a message may wait
            for earlier ones from other producers. Larger: fewer late sightings, later decisions.
        replay_max_buffered: replay mode: messages held while waiting for the slowest producer
            before the order is given up for memory (each ~ one frame's sightings and embeddings).
        replay_stall_s: replay mode: when a producer still streaming has sent nothing for this many
            seconds (linker clock) while others wait on it (it hangs, or died without an
            end-of-stream), the others go on without it (counted as ``forced_releases``); 0: wait
            forever.
    """

    reorder_window_s: float = 0.2
    replay_max_buffered: int = 200_000
    replay_stall_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.reorder_window_s <= 60.0:
            raise ValueError(f"ordering.reorder_window_s must be in [0, 60] s, got {self.reorder_window_s}")
        if self.replay_stall_s < 0:
            raise ValueError(
                f"ordering.replay_stall_s must be >= 0 (0: wait forever), got {self.replay_stall_s}"
            )
        if self.replay_max_buffered < 1:
            raise ValueError(f"ordering.replay_max_buffered must be >= 1, got {self.replay_max_buffered}")


@dataclass(frozen=True)
class Arrival:
    """A decoded message and what was known about it when it was received.

    Attributes:
        decoded: the message (and its embeddings).
        restart: its producer restarted this camera's sequence with this message (seq 0 after a
            higher one): the camera's old tracks end before it is processed.
        received: the linker's monotonic clock (s) at receipt.
    """

    decoded: Decoded
    restart: bool = False
    received: float = field(default_factory=time.monotonic)

    @property
    def producer_id(self) -> str:
        return str(self.decoded.message.producer_id)


@dataclass
class OrderingCounters:
    """What the ordering did (ints), reported in the linker's stats under ``ordering``."""

    released: int = 0
    late: int = 0
    forced_releases: int = 0
    max_buffered: int = 0


class _Keyed:
    """Keys of messages: capture time of sightings, stream end time for end-of-stream messages."""

    def __init__(self) -> None:
        self.stream_ts: dict[tuple[str, str], float] = {}
        self.newest = -math.inf

    def key(self, arrival: Arrival) -> OrderKey:
        message: Any = arrival.decoded.message
        producer, camera, seq = str(message.producer_id), str(message.camera_id), int(message.seq)
        if isinstance(message, SightingBatch):
            ts = float(message.capture_ts)
            if math.isfinite(ts):
                previous = self.stream_ts.get((producer, camera), -math.inf)
                self.stream_ts[(producer, camera)] = max(previous, ts)
                self.newest = max(self.newest, ts)
            return (ts, producer, camera, seq)
        if isinstance(message, EndOfStream) and camera:
            return (self.stream_ts.get((producer, camera), -math.inf), producer, camera, seq)
        return (math.inf, producer, camera, seq)  # producer end (and anything else): after its streams


def _is_producer_end(arrival: Arrival) -> bool:
    message = arrival.decoded.message
    return isinstance(message, EndOfStream) and not message.camera_id


class ReplayMerge:
    """Deterministic k-way merge of the producers' streams by capture time (module docstring).

    Args:
        settings: the ordering section.
        expected_producers: producers of the replay (0: unknown; then only those heard from so far
            are waited for, which is deterministic only if they all start before the first release).
    """

    def __init__(
        self,
        settings: OrderingSettings,
        expected_producers: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.expected_producers = expected_producers
        self.counters = OrderingCounters()
        self._queues: dict[str, deque[tuple[OrderKey, Arrival]]] = {}
        self._released_producers: set[str] = set()
        self._keys = _Keyed()
        self._buffered = 0

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def newest_ts(self) -> float:
        """The newest capture time admitted so far (-inf: none)."""
        return self._keys.newest

    def push(self, arrival: Arrival) -> list[Arrival]:
        """Queue one arrival; return what may be processed now, in order."""
        if not isinstance(arrival.decoded.message, SightingBatch | EndOfStream):
            return [arrival]  # heartbeats and the like: no identity depends on their order
        producer = arrival.producer_id
        if producer in self._released_producers:
            # After its final end-of-stream (e.g. a node restarted): it streams again.
            self._released_producers.discard(producer)
        self._queues.setdefault(producer, deque()).append((self._keys.key(arrival), arrival))
        self._buffered += 1
        self.counters.max_buffered = max(self.counters.max_buffered, self._buffered)
        return self._release(force=self._buffered > self.settings.replay_max_buffered)

    def due(self) -> list[Arrival]:
        """Releases by arrivals only, except after ``replay_stall_s``: everything :meth:`push` could
        not release is blocked by a producer without a queued message, and what has been blocked
        that long goes on without it."""
        stall = self.settings.replay_stall_s
        out: list[Arrival] = []
        while stall and self._buffered:
            oldest = min(q[0][1].received for q in self._queues.values() if q)
            if self.clock() - oldest < stall:
                break
            out += self._release(force=True, limit=1)
        return out

    def drain(self) -> list[Arrival]:
        """Everything still held, in merge order (a stop before the replay ended)."""
        out = []
        while self._buffered:
            out += self._release(force=True, limit=1)
        return out

    def _streaming(self) -> list[str]:
        return [p for p in self._queues if p not in self._released_producers]

    def _release(self, force: bool = False, limit: int | None = None) -> list[Arrival]:
        out: list[Arrival] = []
        while self._buffered and (limit is None or len(out) < limit):
            streaming = self._streaming()
            heads = [(self._queues[p][0][0], p) for p in streaming if self._queues[p]]
            complete = len(heads) == len(streaming) and len(streaming) + len(self._released_producers) >= (
                self.expected_producers
            )
            if not complete:
                if not force or not heads:
                    break
                self.counters.forced_releases += 1
            _, producer = min(heads)
            _, arrival = self._queues[producer].popleft()
            self._buffered -= 1
            if _is_producer_end(arrival):
                self._released_producers.add(producer)
            out.append(arrival)
            force = force and self._buffered > self.settings.replay_max_buffered
        self.counters.released += len(out)
        return out


class LiveReorder:
    """A bounded reorder window for live streams (module docstring).

    Args:
        settings: the ordering section (``reorder_window_s``).
        clock: the linker's monotonic clock (s); injectable for tests.
    """

    def __init__(self, settings: OrderingSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.counters = OrderingCounters()
        self._heap: list[tuple[OrderKey, int, Arrival]] = []
        self._keys = _Keyed()
        self._newest = -math.inf
        self._last_released: OrderKey | None = None
        self._count = 0

    @property
    def buffered(self) -> int:
        return len(self._heap)

    @property
    def newest_ts(self) -> float:
        """The newest capture time admitted so far (-inf: none)."""
        return self._keys.newest

    def push(self, arrival: Arrival) -> list[Arrival]:
        if not isinstance(arrival.decoded.message, SightingBatch | EndOfStream):
            return [arrival]
        key = self._keys.key(arrival)
        if self._last_released is not None and key < self._last_released:
            self.counters.late += 1
            self.counters.released += 1
            return [arrival]  # too late to be put in order: processed now, counted
        if math.isfinite(key[0]):
            self._newest = max(self._newest, key[0])
        self._count += 1
        heapq.heappush(self._heap, (key, self._count, arrival))
        self.counters.max_buffered = max(self.counters.max_buffered, len(self._heap))
        return self.due()

    def due(self) -> list[Arrival]:
        """What has waited long enough (by capture time or by the linker's clock)."""
        window = self.settings.reorder_window_s
        now = self.clock()
        out = []
        while self._heap:
            key, _, arrival = self._heap[0]
            if key[0] > self._newest - window and arrival.received > now - window:
                break
            out.append(self._pop())
        return out

    def drain(self) -> list[Arrival]:
        return [self._pop() for _ in range(len(self._heap))]

    def _pop(self) -> Arrival:
        key, _, arrival = heapq.heappop(self._heap)
        if self._last_released is None or key > self._last_released:
            self._last_released = key
        self.counters.released += 1
        return arrival


def make_intake(mode: str, settings: OrderingSettings, expected_producers: int) -> ReplayMerge | LiveReorder:
    """The ordering for a service ``mode`` (``replay`` or ``live``)."""
    if mode == "replay":
        return ReplayMerge(settings, expected_producers)
    return LiveReorder(settings)
