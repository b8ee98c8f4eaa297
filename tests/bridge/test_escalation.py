"""The interrupt escalation, two ways: the sans-IO table over every phase x event
(and hypothesis over event sequences), and ``bridge.cell``'s trio loop on a
``MockClock`` (pytest-trio's ``autojump_clock``) with a fake child (no process, no real time).

Rules: no subprocess, no sleep in real time; every driver test runs under
``trio.fail_after`` on the autojumping clock, so a hang is a failure, not a wait.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trikernel.bridge.cell import Cell
from trikernel.bridge.escalation import RETURNS, TABLE, Action, Escalation, Event, Phase

GRACE = 3.0
INTERRUPTED = (Phase.INTERRUPTING, Phase.ACKNOWLEDGED, Phase.LAST_CHANCE)

# -- the table -----------------------------------------------------------------------


def test_every_phase_and_event_has_a_row() -> None:
    assert set(TABLE) == {(p, e) for p in Phase for e in Event}


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(Event))
def test_a_step_ends_the_cell_exactly_when_it_returns(phase: Phase, event: Event) -> None:
    after, actions = TABLE[phase, event]
    returns = [a for a in actions if a in RETURNS]
    assert len(returns) == (1 if after is Phase.DONE and phase is not Phase.DONE else 0)
    if returns:
        assert actions[-1] == returns[0]  # nothing is done after the cell returned


@pytest.mark.parametrize("event", list(Event))
def test_done_absorbs_everything(event: Event) -> None:
    assert TABLE[Phase.DONE, event] == (Phase.DONE, ())


def test_interrupt_sends_the_frame_and_sigint_at_once_and_starts_the_clock() -> None:
    assert TABLE[Phase.RUNNING, Event.INTERRUPT] == (
        Phase.INTERRUPTING,
        (Action.SEND_INTERRUPT, Action.SIGINT, Action.START_CLOCK),
    )


@pytest.mark.parametrize("phase", INTERRUPTED)
def test_a_second_interrupt_changes_nothing(phase: Phase) -> None:
    assert TABLE[phase, Event.INTERRUPT] == (phase, ())


def test_sigint_again_at_half_time_only_if_acknowledged() -> None:
    assert TABLE[Phase.ACKNOWLEDGED, Event.HALF_TIME] == (Phase.LAST_CHANCE, (Action.SIGINT,))
    assert TABLE[Phase.INTERRUPTING, Event.HALF_TIME] == (Phase.LAST_CHANCE, ())
    assert TABLE[Phase.LAST_CHANCE, Event.HALF_TIME] == (Phase.LAST_CHANCE, ())


@pytest.mark.parametrize("phase", INTERRUPTED)
def test_the_deadline_kills_and_respawns(phase: Phase) -> None:
    assert TABLE[phase, Event.DEADLINE] == (
        Phase.DONE,
        (Action.KILL_AND_RESPAWN, Action.RETURN_RESTARTED),
    )


@pytest.mark.parametrize("phase", [Phase.RUNNING, *INTERRUPTED])
def test_reply_and_death_end_the_cell_in_every_phase(phase: Phase) -> None:
    assert TABLE[phase, Event.REPLY] == (Phase.DONE, (Action.RETURN_REPLY,))
    assert TABLE[phase, Event.DIED] == (Phase.DONE, (Action.RETURN_DIED,))


def test_input_is_asked_while_running_and_refused_once_interrupted() -> None:
    assert TABLE[Phase.RUNNING, Event.INPUT] == (Phase.RUNNING, (Action.ASK_INPUT,))
    for phase in INTERRUPTED:
        assert TABLE[phase, Event.INPUT] == (phase, (Action.REFUSE_INPUT,))


@pytest.mark.parametrize("event", [Event.ACK, Event.HALF_TIME, Event.DEADLINE])
def test_no_clock_and_no_ack_before_an_interrupt(event: Event) -> None:
    assert TABLE[Phase.RUNNING, event] == (Phase.RUNNING, ())


def _run(events: list[Event]) -> tuple[list[Action], Phase]:
    machine = Escalation()
    actions: list[Action] = []
    for event in events:
        actions.extend(machine.handle(event))
    return actions, machine.phase


@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_any_sequence_keeps_the_promises(events: list[Event]) -> None:
    actions, phase = _run(events)
    # One interrupt per delivery at most: a new one only after the last was delivered.
    rounds = 1 + events.count(Event.DELIVERED)
    assert actions.count(Action.SEND_INTERRUPT) <= rounds
    assert actions.count(Action.START_CLOCK) == actions.count(Action.SEND_INTERRUPT)
    assert actions.count(Action.SIGINT) <= 2 * rounds
    assert actions.count(Action.KILL_AND_RESPAWN) <= 1
    assert sum(a in RETURNS for a in actions) == (1 if phase is Phase.DONE else 0)
    if Action.SEND_INTERRUPT in actions:  # input is never asked after an interrupt
        assert Action.ASK_INPUT not in actions[actions.index(Action.SEND_INTERRUPT) :]
    if Action.KILL_AND_RESPAWN in actions:
        assert actions[-2:] == [Action.KILL_AND_RESPAWN, Action.RETURN_RESTARTED]


@given(st.lists(st.sampled_from([Event.ACK, Event.INPUT, Event.INTERRUPT]), max_size=10))
def test_an_interrupted_cell_always_ends_by_the_deadline(noise: list[Event]) -> None:
    actions, phase = _run([Event.INTERRUPT, *noise, Event.HALF_TIME, Event.DEADLINE])
    assert phase is Phase.DONE
    assert actions[-1] is Action.RETURN_RESTARTED


# -- the driver, on virtual time ---------------------------------------------------------


class FakeControl:
    """Records what the cell did, with the (virtual) time; reacts as a child would."""

    def __init__(
        self, cell: Cell, *, ack: bool = False, obey_sigint: int = 0, deliver: bool = False
    ) -> None:
        self.cell = cell
        self.log: list[tuple[float, str]] = []
        self._ack = ack
        self._deliver = deliver  # each SIGINT raises KeyboardInterrupt in the cell
        self._obey_sigint = obey_sigint  # reply after this many SIGINTs (0: never)
        self.sigints = 0

    def _note(self, what: str) -> None:
        self.log.append((trio.current_time(), what))

    async def send_interrupt(self) -> None:
        self._note("interrupt frame")
        if self._ack:
            self.cell.post(Event.ACK)

    def sigint(self) -> None:
        self.sigints += 1
        self._note("sigint")
        if self._deliver:
            self.cell.post(Event.DELIVERED)
        if self.sigints == self._obey_sigint:
            self.cell.post(Event.REPLY, {"status": "error", "ename": "KeyboardInterrupt"})

    async def ask_input(self, request: Any) -> None:
        self._note(f"ask {request}")
        await trio.sleep_forever()  # the frontend never answers

    async def refuse_input(self) -> None:
        self._note("refuse input")

    async def kill_and_respawn(self) -> None:
        self._note("kill")
        await trio.sleep(0.1)  # the kill and the new process take a moment


async def _interrupt_at(cell: Cell, when: float) -> None:
    await trio.sleep_until(when)
    cell.interrupt()


async def test_a_reply_without_interrupt(autojump_clock: trio.testing.MockClock) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell)
    cell.post(Event.REPLY, {"status": "ok"})
    with trio.fail_after(1):
        assert await cell.run(control) == (Action.RETURN_REPLY, {"status": "ok"})
    assert control.log == []


async def test_sigint_at_once_stops_a_sync_cell(autojump_clock: trio.testing.MockClock) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, obey_sigint=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_interrupt_at, cell, trio.current_time() + 5)
        with trio.fail_after(60):
            end, value = await cell.run(control)
    assert end is Action.RETURN_REPLY and value["ename"] == "KeyboardInterrupt"
    assert [(t - 5, w) for t, w in control.log] == [(0, "interrupt frame"), (0, "sigint")]


async def test_acknowledged_cell_gets_a_second_sigint_at_half_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, ack=True, obey_sigint=2)
    start = trio.current_time()
    cell.interrupt()
    with trio.fail_after(60):
        end, _ = await cell.run(control)
    assert end is Action.RETURN_REPLY
    assert [(t - start, w) for t, w in control.log] == [
        (0, "interrupt frame"),
        (0, "sigint"),
        (GRACE / 2, "sigint"),
    ]


async def test_unacknowledged_stubborn_cell_is_killed_at_the_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell)
    start = trio.current_time()
    cell.interrupt()
    with trio.fail_after(60):
        end, _ = await cell.run(control)
    assert end is Action.RETURN_RESTARTED
    assert [(t - start, w) for t, w in control.log] == [
        (0, "interrupt frame"),
        (0, "sigint"),
        (GRACE, "kill"),
    ]


async def test_acknowledged_stubborn_cell_is_killed_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, ack=True)
    start = trio.current_time()
    cell.interrupt()
    with trio.fail_after(60):
        end, _ = await cell.run(control)
    assert end is Action.RETURN_RESTARTED
    assert [w for _, w in control.log] == ["interrupt frame", "sigint", "sigint", "kill"]
    assert control.log[-1][0] - start == GRACE


def test_a_delivered_interrupt_is_never_escalated_by_the_clock() -> None:
    assert TABLE[Phase.INTERRUPTING, Event.DELIVERED] == (Phase.DELIVERED, ())
    # After an ack the cell had its cancellation: one more KeyboardInterrupt may be
    # swallowed too, so the clock goes on.
    for phase in (Phase.ACKNOWLEDGED, Phase.LAST_CHANCE):
        assert TABLE[phase, Event.DELIVERED] == (phase, ())
    for event in (Event.HALF_TIME, Event.DEADLINE, Event.ACK, Event.DELIVERED):
        assert TABLE[Phase.DELIVERED, event] == (Phase.DELIVERED, ())
    assert TABLE[Phase.DELIVERED, Event.REPLY] == (Phase.DONE, (Action.RETURN_REPLY,))
    assert TABLE[Phase.RUNNING, Event.DELIVERED] == (Phase.RUNNING, ())  # not our SIGINT


def test_a_second_interrupt_after_delivery_starts_over() -> None:
    actions, phase = _run([Event.INTERRUPT, Event.DELIVERED, Event.DEADLINE, Event.INTERRUPT])
    assert phase is Phase.INTERRUPTING
    assert actions[-3:] == [Action.SEND_INTERRUPT, Action.SIGINT, Action.START_CLOCK]


async def test_slow_cleanup_after_a_delivered_interrupt_keeps_the_evaluator(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, deliver=True)

    async def cleanup_then_reply() -> None:
        await trio.sleep(GRACE * 5)  # the cell's finally: far past the grace period
        cell.post(Event.REPLY, {"status": "error", "ename": "KeyboardInterrupt"})

    cell.interrupt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cleanup_then_reply)
        with trio.fail_after(60):
            end, _ = await cell.run(control)
    assert end is Action.RETURN_REPLY
    assert [w for _, w in control.log] == ["interrupt frame", "sigint"]  # no kill


async def test_a_second_interrupt_gets_a_fresh_grace_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, deliver=True)
    start = trio.current_time()
    cell.interrupt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_interrupt_again, cell, start + GRACE * 2)
        with trio.fail_after(60):
            end, _ = await cell.run(control)
    # Delivered twice, never answered: only an interrupt not delivered in time kills, so
    # this cell runs on (the second interrupt was delivered too) until the test's reply.
    assert end is Action.RETURN_REPLY
    times = [t - start for t, w in control.log if w == "interrupt frame"]
    assert times == [0, GRACE * 2]
    assert "kill" not in [w for _, w in control.log]


async def _interrupt_again(cell: Cell, when: float) -> None:
    await trio.sleep_until(when)
    cell.interrupt()
    await trio.sleep(GRACE * 3)  # past a grace period that a stale clock would end
    cell.post(Event.REPLY, {"status": "error"})


async def test_death_while_interrupted_returns_died(autojump_clock: trio.testing.MockClock) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell)
    died = RuntimeError("stand-in for the EvaluatorDied")

    async def die_later() -> None:
        await trio.sleep(1)
        cell.post(Event.DIED, died)

    cell.interrupt()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(die_later)
        with trio.fail_after(60):
            assert await cell.run(control) == (Action.RETURN_DIED, died)
    assert "kill" not in [w for _, w in control.log]


async def test_interrupt_cancels_a_pending_input_and_refuses_the_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell, obey_sigint=0)
    cell.post(Event.INPUT, "name?")

    async def later() -> None:
        await trio.sleep(2)
        cell.interrupt()
        await trio.sleep(0.5)
        cell.post(Event.INPUT, "again?")  # the cell asks again after the interrupt
        await trio.sleep(0.1)
        cell.post(Event.REPLY, {"status": "error"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        with trio.fail_after(60):
            end, _ = await cell.run(control)
    assert end is Action.RETURN_REPLY
    assert [w for _, w in control.log] == ["ask name?", "interrupt frame", "sigint", "refuse input"]


async def test_cancelling_the_caller_escalates_then_reraises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cell = Cell(1, GRACE)
    control = FakeControl(cell)
    with trio.move_on_after(1) as scope:
        await cell.run(control)
    assert scope.cancelled_caught
    # the cell was still stopped (shielded) before Cancelled went on: here, killed
    assert [w for _, w in control.log] == ["interrupt frame", "sigint", "kill"]
    assert cell.escalation.phase is Phase.DONE


async def test_events_after_the_end_are_dropped(autojump_clock: trio.testing.MockClock) -> None:
    cell = Cell(1, GRACE)
    cell.post(Event.REPLY, {})
    with trio.fail_after(1):
        await cell.run(FakeControl(cell))
    cell.post(Event.DIED, None)  # no error, no effect
    cell.interrupt()
    assert cell.escalation.phase is Phase.DONE
