"""Therapist act labels in the LLM4CBT taxonomy (13 act types in 5 categories, plus ``oov``).

Two classifiers with one interface, ``classify(texts, contexts=None) -> list[ActLabel]`` and
``judge(...) -> list[JudgeResult]``:

* :class:`EmbeddedActClassifier`: deterministic, CPU, MiniLM embeddings + form cues + logistic
  regression fitted at load on ``data/examples.jsonl`` and ``data/speech_examples.jsonl``;
* :class:`LLMActClassifier`: any backend, prompted with the definitions of ``taxonomy.yaml``.

``label_file`` labels a JSONL file (``cbtgym label``); ``rewards.factory.make_judge("acts", spec)``
builds either from a ``--judge`` value. Importing this package loads no model.
"""

from ..lazy import lazy_attributes
from .labeling import label_file
from .labels import ActClassifier, ActLabel
from .taxonomy import CATEGORIES, act_types, category_of, load_taxonomy


__getattr__ = lazy_attributes(__name__, {"EmbeddedActClassifier": "embedded_classifier", "LLMActClassifier": "llm_classifier"})


__all__ = [
    "ActClassifier",
    "ActLabel",
    "CATEGORIES",
    "EmbeddedActClassifier",
    "LLMActClassifier",
    "act_types",
    "category_of",
    "label_file",
    "load_taxonomy",
]
