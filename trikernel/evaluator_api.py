"""What the kernel needs from an evaluator, and the values that cross between them.

Two evaluators implement ``Evaluator``: the subprocess one (``trikernel.bridge``,
IPython in a child process) and the embedded one (``trikernel.inprocess``, the
same IPython core on the application's loop). The kernel opens one through an
``EvaluatorFactory``, handing it an ``OutputSink``: a *synchronous* callable the
evaluator calls with every ``Output``, in order. Publishing never blocks (iopub
queues per subscriber and drops for a stalled one), so an output is on its way
to the clients when the call returns, and a reply sent after it cannot overtake
it: no channel, no writer task, no drain loop.

Every ``Output`` names the request it belongs to (``parent``): the evaluator
knows which request is running, so the kernel never guesses.

No trio here, no I/O: plain data and protocols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ._bytes import Buffer
from .errors import RemoteProtocolError

if TYPE_CHECKING:
    from .messages import Message

__all__ = [
    "Parent",
    "Output",
    "ExecuteRequest",
    "Evaluator",
    "EvaluatorFactory",
    "OutputSink",
    "InputCallback",
    "INTROSPECTION_REQUESTS",
    "COMM_MESSAGES",
]

#: Requests an evaluator answers with ``Evaluator.request``.
INTROSPECTION_REQUESTS = frozenset(
    {
        "complete_request",
        "inspect_request",
        "history_request",
        "is_complete_request",
        "comm_info_request",
    }
)
#: Frontend comm messages, delivered with ``Evaluator.send_comm``.
COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})


@dataclass(frozen=True, slots=True)
class Parent:
    """The request an evaluator carries out, as user code may see it
    (``get_ipython().kernel.get_parent()``) and as outputs name it."""

    header: Mapping[str, Any] = field(default_factory=dict)
    parent_header: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @classmethod
    def of(cls, msg: Message) -> Parent:
        return cls(msg.header, msg.parent_header, msg.metadata)

    def to_json(self) -> dict[str, Any]:
        return {
            "header": dict(self.header),
            "parent_header": dict(self.parent_header),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, value: Any) -> Parent:
        """Raises RemoteProtocolError for anything but the shape ``to_json`` makes."""
        if value is None:
            return cls()
        if not isinstance(value, dict) or not all(
            isinstance(value.get(k, {}), dict) for k in ("header", "parent_header", "metadata")
        ):
            raise RemoteProtocolError(f"malformed parent: {value!r:.200}")
        return cls(
            value.get("header", {}), value.get("parent_header", {}), value.get("metadata", {})
        )


@dataclass(frozen=True, slots=True)
class Output:
    """One iopub message an evaluator produced.

    ``content`` is a dict, or bytes-like: wire JSON the evaluator already encoded,
    which the kernel forwards without decoding. ``parent`` is None only for output
    that belongs to no request (a background task before the first cell).
    """

    msg_type: str
    content: dict[str, Any] | Buffer
    parent: Parent | None = None
    buffers: Sequence[Buffer] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _field(
    content: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    value = content.get(name, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        names = " or ".join(k.__name__ for k in kinds)
        raise RemoteProtocolError(
            f"execute_request: {name!r} must be {names}, not {type(value).__name__}"
        )
    return value


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """An execute_request's content, parsed and checked once (``from_content``).

    ``store_history`` is already false for a silent cell, as the protocol says.
    """

    code: str
    silent: bool = False
    store_history: bool = True
    allow_stdin: bool = False
    stop_on_error: bool = True
    user_expressions: Mapping[str, str] = field(default_factory=dict)
    subshell_id: str | None = None
    parent: Parent = field(default_factory=Parent)

    @classmethod
    def from_content(
        cls,
        content: Mapping[str, Any],
        parent: Parent | None = None,
        subshell_id: str | None = None,
    ) -> ExecuteRequest:
        """Raises RemoteProtocolError naming the first field of a wrong type."""
        silent = bool(_field(content, "silent", (bool, int), False))
        store = bool(_field(content, "store_history", (bool, int), not silent))
        expressions = _field(content, "user_expressions", dict, {})
        if not all(isinstance(v, str) for v in expressions.values()):
            raise RemoteProtocolError("execute_request: user_expressions values must be strings")
        return cls(
            code=_field(content, "code", str, ""),
            silent=silent,
            store_history=store and not silent,
            allow_stdin=bool(_field(content, "allow_stdin", (bool, int), False)),
            stop_on_error=bool(_field(content, "stop_on_error", (bool, int), True)),
            user_expressions=dict(expressions),
            subshell_id=subshell_id,
            parent=parent or Parent(),
        )

    def to_content(self) -> dict[str, Any]:
        """The normalised content (what crosses the evaluator pipe)."""
        return {
            "code": self.code,
            "silent": self.silent,
            "store_history": self.store_history,
            "allow_stdin": self.allow_stdin,
            "stop_on_error": self.stop_on_error,
            "user_expressions": dict(self.user_expressions),
        }


#: prompt, password -> the frontend's answer (EOFError if it cannot answer).
InputCallback = Callable[[str, bool], Awaitable[str]]
#: Called with every output, in order; must not block.
OutputSink = Callable[[Output], None]


class Evaluator(Protocol):
    """What the kernel calls. Reply contents are dicts shaped as the Jupyter
    protocol's ``*_reply`` contents; failures are error replies, not exceptions."""

    @property
    def execution_count(self) -> int:
        """The count of the last cell stored in history (0 before any)."""
        ...

    async def execute(
        self, request: ExecuteRequest, request_input: InputCallback | None
    ) -> dict[str, Any]:
        """Run one cell; every output of it has gone to the sink when this returns."""
        ...

    def interrupt(self) -> None:
        """Cancel the running cell (a no-op when none runs)."""
        ...

    async def request(
        self, msg_type: str, content: dict[str, Any], parent: Parent
    ) -> dict[str, Any]:
        """Answer one of ``INTROSPECTION_REQUESTS``."""
        ...

    async def send_comm(
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[Buffer], parent: Parent
    ) -> None:
        """Deliver a frontend comm message; returns once its handlers ran."""
        ...

    async def aclose(self) -> None: ...


EvaluatorFactory = Callable[[OutputSink], AbstractAsyncContextManager[Evaluator]]
