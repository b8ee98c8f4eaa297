"""The evaluator: the subprocess where user code runs (IPython on a persistent trio loop).

``protocol`` (bytes <-> frames, sans-IO) and ``frames`` (one typed class per
kind) are the private pipe, shared with ``trikernel.bridge`` (the kernel's
side). ``outbox``, ``process``, ``loop`` and ``__main__`` run only inside the
subprocess, on the shell core in ``trikernel.cells``; importing this package
does not import IPython.
"""

__all__: list[str] = []
