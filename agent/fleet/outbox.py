"""Delivery of the agent's outbox (store.py) to the collector: nothing acknowledged is lost, nothing counted twice.

A row leaves the outbox only when the collector says it stored the row's ``msg_id`` (an ``acks`` message, sent
after the InfluxDB write) or refused it for good. The broker's PUBACK only moves a row from "in flight" to
"waiting for the collector": Mosquitto PUBACKs messages it then loses (a restart before its autosave, shared
subscriptions it does not restore after a restart, a full queue, a subscriber the ACL does not let read), so a
PUBACK says nothing about the data being stored. A row not acknowledged in time is published again, waiting twice
as long each time (``ack_wait_s`` doubling up to ``MAX_ACK_WAIT_S``); the collector drops the duplicates by id.

Back-pressure: at most ``window`` rows wait for their PUBACK and at most ``max_outstanding`` rows wait for the
collector; new rows wait on disk beyond that, so a board never floods a broker or a collector that is behind.

Threads: paho's network thread calls ``on_puback`` and ``on_acks``; the agent's main loop calls ``flush``.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable

from edgebench.agent.fleet.store import AgentStore

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK reason: accepted, but nobody subscribed (no collector connected yet)
MAX_ACK_WAIT_S = 900.0
INFLIGHT_TIMEOUT_S = 120.0  # no PUBACK this long while connected: paho lost the message; publish the row again


class Outbox:
    def __init__(self, store: AgentStore, publish: Callable[[str, bytes], int], ack_wait_s: float = 30.0,
                 window: int = 20, max_outstanding: int = 100, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        """``publish(topic, payload) -> mid`` hands a QoS 1 message to the MQTT client. ``clock`` times what is
        in flight; ``wall`` (epoch seconds) is stored with each row, so waits survive an agent restart."""
        self.store, self.publish = store, publish
        self.ack_wait_s, self.window, self.max_outstanding = ack_wait_s, window, max_outstanding
        self.clock, self.wall = clock, wall
        self.pubacks: queue.Queue = queue.Queue()  # (mid, reason code) from paho's thread
        self.inflight: dict[int, tuple[int, float]] = {}  # mid -> (row, handed to paho at); main loop only
        self.refused: set[int] = set()  # rows the broker refused (ACL, size): kept, retried after a restart only
        self._warned_no_subscriber = self._warned_resent = -1e9

    # ------------------------------------------------------------ from paho's thread

    def on_puback(self, mid: int, reason: Any) -> None:
        self.pubacks.put((mid, int(getattr(reason, "value", 0) or 0)))

    def on_acks(self, payload: dict) -> None:
        """The collector's ``acks``: stored rows are done; refused rows are done too, and counted."""
        stored = self.store.acknowledged(payload.get("ids") or [])
        refused = payload.get("refused") or []
        for entry in refused:
            log.error("the collector refused outbox message %s for good: %s", entry["id"], entry["reason"])
        gone = self.store.acknowledged([entry["id"] for entry in refused], counter="refused_by_collector")
        log.debug("collector acknowledged %d stored and %d refused message(s)", stored, gone)

    # ------------------------------------------------------------ from the main loop

    def wait_after(self, attempts: int) -> float:
        return min(self.ack_wait_s * 2 ** max(attempts - 1, 0), MAX_ACK_WAIT_S)

    def flush(self, connected: bool) -> None:
        """Settle PUBACKs, then hand paho the rows that are due, within the windows."""
        self._settle()
        if not connected:
            return
        now = self.clock()
        for mid, (_row, since) in list(self.inflight.items()):
            if now - since > INFLIGHT_TIMEOUT_S:
                del self.inflight[mid]  # paho never reported it: the row is due again
        room = self.window - len(self.inflight)
        if room <= 0:
            return
        busy = {row for row, _ in self.inflight.values()} | self.refused
        new = self.store.outstanding() < self.max_outstanding
        for row, topic_name, payload in self.store.due(busy, room, self.wall(), new=new):
            self.inflight[self.publish(topic_name, payload)] = (row, now)

    def _settle(self) -> None:
        while True:
            try:
                mid, code = self.pubacks.get_nowait()
            except queue.Empty:
                return
            row, _ = self.inflight.pop(mid, (None, 0.0))
            if row is None:
                continue
            if code >= 0x80:
                log.error("broker refused outbox message %d (reason %#x): kept; retried after a restart", row, code)
                self.refused.add(row)
            elif code == NO_MATCHING_SUBSCRIBERS:
                # Nobody took it (e.g. a restarted broker before the collector subscribed again): soon again, 2 s
                # doubling, so a fleet whose collector is away does not publish in a tight loop.
                attempts = self.store.attempts(row) + 1
                self.store.published(row, self.wall() + min(2.0 * 2 ** (attempts - 1), self.wait_after(attempts)))
                self._warn_no_subscriber()
            else:
                attempts = self.store.attempts(row) + 1
                self.store.published(row, self.wall() + self.wait_after(attempts))
                if attempts > 1:
                    self._warn_resent(attempts)

    def _warn_resent(self, attempts: int) -> None:
        if self.clock() - self._warned_resent > 60:
            self._warned_resent = self.clock()
            log.warning("the collector has not acknowledged outbox messages in time (one published %d times): "
                        "published again; %d wait for an ack", attempts, self.store.outstanding())

    def _warn_no_subscriber(self) -> None:
        if self.clock() - self._warned_no_subscriber > 60:
            self._warned_no_subscriber = self.clock()
            log.warning("the broker has no subscriber for the outbox's messages (no collector connected): "
                        "kept and published again")

    def counters(self) -> dict:
        """For heartbeats: rows waiting for the collector, publications again, refusals by the collector."""
        return {"unacked": self.store.outstanding(), "resent": self.store.counter("resent"),
                "refused": self.store.counter("refused_by_collector")}
