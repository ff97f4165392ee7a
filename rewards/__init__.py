"""Judges for CBT sessions: CTRS, automatic-thought recovery, satisfaction, act labels, safety,
the composite reward and the embedded rubric. Every judge takes a backend (the same batched
interface as the environment) and returns :class:`rewards.types.JudgeResult`.

Submodules are imported on use (``from rewards.ctrs import CTRSJudge``) so that importing the
package loads no model.
"""

from .types import JudgeResult

__all__ = ["JudgeResult"]
