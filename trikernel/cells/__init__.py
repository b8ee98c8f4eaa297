"""What both evaluators share: the subprocess one (``trikernel.evaluator``) and the
embedded one (``trikernel.inprocess``) run cells through these same modules.

Importing the package imports nothing: ``replies`` is used by the kernel process
too, which must not pay for IPython.
"""
