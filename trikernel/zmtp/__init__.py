"""ZMTP 3.1 (accepting 3.0 peers), NULL mechanism, in pure Python.

``codec`` is the sans-IO connection; ``transport`` and ``sockets`` put it on trio.
"""
