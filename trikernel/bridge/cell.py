"""The running cell: its events, and the trio loop that drives ``escalation``.

The frame reader ``post``s the cell's events (ack, input request, reply, death)
to a bounded channel; ``Cell.run`` feeds them, the interrupt and the two
deadlines of the grace period into the ``Escalation`` table and performs the
actions through a ``CellControl`` (the bridge's, or a test's fake: nothing here
knows about processes). ``interrupt()`` cancels the running part; cancelling
the caller interrupts the same way, and the caller's ``Cancelled`` is re-raised
once the cell has ended.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol

import trio

from .escalation import RETURNS, Action, Escalation, Event

__all__ = ["Cell", "CellControl"]


class CellControl(Protocol):
    """How a cell's actions are carried out."""

    async def send_interrupt(self) -> None: ...

    def sigint(self) -> None: ...

    async def ask_input(self, request: Any) -> None: ...

    async def refuse_input(self) -> None: ...

    async def kill_and_respawn(self) -> None: ...


class Cell:
    """One execute request in flight, from the Execute frame to its end."""

    def __init__(self, cell_id: int, grace_period: float) -> None:
        self.id = cell_id
        self.grace_period = grace_period
        self.escalation = Escalation()
        self._send, self._receive = trio.open_memory_channel[tuple[Event, Any]](100)
        self._scope = trio.CancelScope()
        self._deadlines: deque[tuple[float, Event]] = deque()

    def post(self, event: Event, value: Any = None) -> None:
        """From the frame reader (sync). Dropped once nobody reads (the cell ended)."""
        try:
            self._send.send_nowait((event, value))
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def interrupt(self) -> None:
        """Sync; before ``run`` started too. The first cancels the running part; a later
        one is an ``INTERRUPT`` event of its own (after a delivered interrupt, it
        interrupts again)."""
        if self._scope.cancel_called:
            self.post(Event.INTERRUPT)
        else:
            self._scope.cancel()

    async def run(self, control: CellControl) -> tuple[Action, Any]:
        """Until the cell ends: the ``RETURN_*`` action that ended it and its event's value."""
        cancelled: trio.Cancelled | None = None
        try:
            with self._scope:
                return await self._loop(control)
        except trio.Cancelled as exc:  # the caller was cancelled: stop the cell, then go
            cancelled = exc
        with trio.CancelScope(shield=True):
            first = await self._step(Event.INTERRUPT, None, control)
            end = first if first is not None else await self._loop(control)
        if cancelled is not None:
            raise cancelled
        return end

    async def _loop(self, control: CellControl) -> tuple[Action, Any]:
        while True:
            at, tick = self._deadlines[0] if self._deadlines else (math.inf, None)
            with trio.move_on_at(at) as timer:
                event, value = await self._receive.receive()
            if timer.cancelled_caught:
                assert tick is not None
                self._deadlines.popleft()
                event, value = tick, None
            end = await self._step(event, value, control)
            if end is not None:
                return end

    async def _step(
        self, event: Event, value: Any, control: CellControl
    ) -> tuple[Action, Any] | None:
        for action in self.escalation.handle(event):
            if action in RETURNS:
                self._send.close()  # later events are dropped
                return action, value
            if action is Action.SEND_INTERRUPT:
                await control.send_interrupt()
            elif action is Action.SIGINT:
                control.sigint()
            elif action is Action.START_CLOCK:
                now = trio.current_time()
                self._deadlines.clear()  # a new interrupt: the old clock is over
                self._deadlines.extend(
                    [
                        (now + self.grace_period / 2, Event.HALF_TIME),
                        (now + self.grace_period, Event.DEADLINE),
                    ]
                )
            elif action is Action.ASK_INPUT:
                await control.ask_input(value)
            elif action is Action.REFUSE_INPUT:
                await control.refuse_input()
            elif action is Action.KILL_AND_RESPAWN:
                await control.kill_and_respawn()
        return None
