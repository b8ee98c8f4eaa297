"""The embedded evaluator: a kernel's cells as trio tasks of the application that
embeds it (``trikernel.embed``), on the same IPython core as the subprocess one.

``routing`` (what is process-global, routed by context), ``shell`` (the core,
minus what would change the application's process), ``evaluator`` (the
``Evaluator`` itself).
"""

from ..errors import BlockingInputError as BlockingInputError
from .evaluator import InProcessEvaluator as InProcessEvaluator
from .evaluator import ainput as ainput
from .evaluator import open_inprocess_evaluator as open_inprocess_evaluator

__all__ = ["InProcessEvaluator", "BlockingInputError", "ainput", "open_inprocess_evaluator"]
