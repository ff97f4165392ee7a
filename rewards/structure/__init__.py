"""The five-part structure of a CBT-LLM answer: validation and empathy, key thought or belief, challenge or
reflection, strategy, encouragement (Na 2024). Which parts does an answer have?

Two judges with one interface, ``judge(answers, questions=None) -> list[StructureLabel]``:

* :class:`EmbeddedStructureJudge`: deterministic, CPU: a sentence classifier on MiniLM embeddings and light
  cues, fitted at load on ``data/examples.yaml``;
* :class:`LLMStructureJudge`: any backend, prompted with the parts' definitions, five booleans back.

``rewards.factory.make_judge("structure", spec)`` builds either from a spec. Importing this package loads no
model. (Cognitive distortions, the other half of CBT-LLM's analysis, are not judged here.)
"""

from ..lazy import lazy_attributes
from .parts import PART_TITLES, PARTS, StructureLabel, load_labelled_answers


__getattr__ = lazy_attributes(__name__, {"EmbeddedStructureJudge": "embedded", "LLMStructureJudge": "llm"})


__all__ = ["EmbeddedStructureJudge", "LLMStructureJudge", "PARTS", "PART_TITLES", "StructureLabel", "load_labelled_answers"]
