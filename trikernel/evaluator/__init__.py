"""The evaluator: the subprocess where user code runs (IPython on a persistent trio loop).

``protocol`` is the sans-IO framing of its private pipe, shared with
``trikernel.bridge`` (the kernel's side). ``shell``, ``loop`` and
``__main__`` run only inside the subprocess; importing this package does not
import IPython.
"""

__all__: list[str] = []
