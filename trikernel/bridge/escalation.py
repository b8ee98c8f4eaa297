"""How a running cell is stopped: a sans-IO ``(phase, event) -> (phase, actions)`` table.

Theory of operation
-------------------
A cell starts ``RUNNING``. The bridge feeds every event of the cell into
``Escalation.handle`` and performs the actions it returns, in order; the table
below is the whole policy, and ``bridge.cell`` is the small trio loop that feeds
it (events from the frame reader, the two deadlines from a clock, ``INTERRUPT``
from ``interrupt()`` or from the caller's cancellation). No trio, no os, no clock
here: the deadlines are events like the others, so the table is tested over
every phase and event without a process or real time (tests/bridge).

The policy, in the manner of trio's ``run_process(deliver_cancel=...)``:

1. ``INTERRUPT``: send an interrupt frame (an awaiting cell is cancelled by the
   evaluator's loop, which acknowledges) and SIGINT at once (its handler raises
   KeyboardInterrupt in synchronous code, and cancels the cell's scope when the
   loop is awaiting, so a SIGINT the frame did not need is harmless); the grace
   period starts.
2. ``HALF_TIME`` (half the grace period) while acknowledged but still running: the
   cell went back to synchronous code, so SIGINT once more.
3. ``DEADLINE`` (the grace period): kill the evaluator and start a new one; the
   cell's reply says so (``EvaluatorRestarted``).

Only an interrupt that was **not delivered** escalates: once the evaluator says
KeyboardInterrupt was raised in the cell's own code (``DELIVERED``, before any
``ACK``: the SIGINT broke synchronous code), the cell is handling it (its
``finally`` blocks, a slow cleanup) and the deadlines pass by; the namespace is
kept however long that takes. A second ``INTERRUPT`` then interrupts again, with
a fresh grace period, as if for the first time. A cell that was awaiting got
its cancellation instead (``ACK``); if it is still running at the deadline it
swallowed it, or its cleanup awaits longer than the grace period, and it is
replaced as before.

A reply ends the cell in any phase; so does the evaluator's death
(``EvaluatorDied``). An input request is answered by the frontend while the cell
runs, and refused once it is interrupted. ``DONE`` absorbs everything.
"""

from __future__ import annotations

import enum

__all__ = ["Phase", "Event", "Action", "TABLE", "RETURNS", "Escalation"]


class Phase(enum.Enum):
    RUNNING = "running"  # nobody asked the cell to stop
    INTERRUPTING = "interrupting"  # interrupt frame and SIGINT sent, no acknowledgement
    ACKNOWLEDGED = "acknowledged"  # the loop cancelled the cell's scope; it still runs
    LAST_CHANCE = "last chance"  # past half the grace period
    DELIVERED = "delivered"  # KeyboardInterrupt reached the cell's code: it is handling it
    DONE = "done"  # the cell has its reply


class Event(enum.Enum):
    INTERRUPT = "interrupt"  # interrupt(), or the caller was cancelled
    ACK = "ack"  # interrupt_ack frame
    DELIVERED = "delivered"  # interrupt_delivered frame
    INPUT = "input"  # input_request frame
    REPLY = "reply"  # reply frame (after the fd 1/2 markers)
    DIED = "died"  # the evaluator process exited
    HALF_TIME = "half time"  # half the grace period since the interrupt
    DEADLINE = "deadline"  # the whole grace period since the interrupt


class Action(enum.Enum):
    SEND_INTERRUPT = "send the interrupt frame"
    SIGINT = "SIGINT to the evaluator's process group"
    START_CLOCK = "start the grace period (again, if it ran)"
    ASK_INPUT = "forward the input request to the frontend"
    REFUSE_INPUT = "answer the input request: interrupted"
    KILL_AND_RESPAWN = "kill the evaluator, start a new one, say the namespace was reset"
    RETURN_REPLY = "return the evaluator's reply"
    RETURN_DIED = "return an EvaluatorDied error reply"
    RETURN_RESTARTED = "return an EvaluatorRestarted error reply"


#: The actions that end a cell: exactly one of them on every step into DONE.
RETURNS = frozenset({Action.RETURN_REPLY, Action.RETURN_DIED, Action.RETURN_RESTARTED})

P, E, A = Phase, Event, Action
_Step = tuple[Phase, tuple[Action, ...]]


def _interrupted(phase: Phase, *, half_time: _Step) -> dict[tuple[Phase, Event], _Step]:
    """The rows shared by the three phases after an interrupt."""
    return {
        (phase, E.INTERRUPT): (phase, ()),  # a second interrupt: the clock keeps running
        (phase, E.ACK): (P.ACKNOWLEDGED if phase is P.INTERRUPTING else phase, ()),
        # Delivered before any ack: the SIGINT broke synchronous code, which now runs its
        # cleanup. After an ack, the cell had its cancellation and went on running: a
        # KeyboardInterrupt landing then is one more it may swallow; the clock goes on.
        (phase, E.DELIVERED): (P.DELIVERED if phase is P.INTERRUPTING else phase, ()),
        (phase, E.INPUT): (phase, (A.REFUSE_INPUT,)),
        (phase, E.REPLY): (P.DONE, (A.RETURN_REPLY,)),
        (phase, E.DIED): (P.DONE, (A.RETURN_DIED,)),
        (phase, E.HALF_TIME): half_time,
        (phase, E.DEADLINE): (P.DONE, (A.KILL_AND_RESPAWN, A.RETURN_RESTARTED)),
    }


TABLE: dict[tuple[Phase, Event], _Step] = {
    (P.RUNNING, E.INTERRUPT): (
        P.INTERRUPTING,
        (A.SEND_INTERRUPT, A.SIGINT, A.START_CLOCK),
    ),
    (P.RUNNING, E.ACK): (P.RUNNING, ()),  # no interrupt was sent: stale, ignored
    (P.RUNNING, E.DELIVERED): (P.RUNNING, ()),  # a SIGINT not from us (signal mode)
    (P.RUNNING, E.INPUT): (P.RUNNING, (A.ASK_INPUT,)),
    (P.RUNNING, E.REPLY): (P.DONE, (A.RETURN_REPLY,)),
    (P.RUNNING, E.DIED): (P.DONE, (A.RETURN_DIED,)),
    (P.RUNNING, E.HALF_TIME): (P.RUNNING, ()),  # no clock runs before an interrupt
    (P.RUNNING, E.DEADLINE): (P.RUNNING, ()),
    # Not acknowledged at half time: the first SIGINT is pending or was ignored.
    **_interrupted(P.INTERRUPTING, half_time=(P.LAST_CHANCE, ())),
    # Acknowledged, yet still running at half time: back in synchronous code.
    **_interrupted(P.ACKNOWLEDGED, half_time=(P.LAST_CHANCE, (A.SIGINT,))),
    **_interrupted(P.LAST_CHANCE, half_time=(P.LAST_CHANCE, ())),
    # The cell handles its KeyboardInterrupt: no deadline applies; a new interrupt
    # starts over.
    (P.DELIVERED, E.INTERRUPT): (
        P.INTERRUPTING,
        (A.SEND_INTERRUPT, A.SIGINT, A.START_CLOCK),
    ),
    (P.DELIVERED, E.ACK): (P.DELIVERED, ()),
    (P.DELIVERED, E.DELIVERED): (P.DELIVERED, ()),
    (P.DELIVERED, E.INPUT): (P.DELIVERED, (A.REFUSE_INPUT,)),
    (P.DELIVERED, E.REPLY): (P.DONE, (A.RETURN_REPLY,)),
    (P.DELIVERED, E.DIED): (P.DONE, (A.RETURN_DIED,)),
    (P.DELIVERED, E.HALF_TIME): (P.DELIVERED, ()),
    (P.DELIVERED, E.DEADLINE): (P.DELIVERED, ()),
    **{(P.DONE, event): (P.DONE, ()) for event in Event},
}


class Escalation:
    """One cell's phase. ``handle(event)`` moves it and says what to do."""

    def __init__(self) -> None:
        self.phase = Phase.RUNNING

    def handle(self, event: Event) -> tuple[Action, ...]:
        self.phase, actions = TABLE[self.phase, event]
        return actions
