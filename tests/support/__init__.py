"""Helpers shared by the test packages (importable as ``support``: pytest puts tests/ on
sys.path, as for any rootdir conftest without ``__init__.py``).

- ``support.wire``: ZMTP bytes built by hand from the spec (greeting, frames, READY).
- ``support.iopub``: iopub messages of one request (stream text, results, until idle).
- ``support.client``: execute a cell; shell/control replies matched by parent msg_id.
- ``support.procs``: processes seen from /proc (tree, alive, RSS), polling, killing.
- ``support.kernel_process``: a kernel as a real process (``python -m trikernel -f``
  or a KernelManager), a ready client, and reaping.

Every wait takes a timeout (``TIMEOUT`` by default).
"""

TIMEOUT = 20.0  # seconds: any single wait for a kernel, generous for a loaded machine
