"""A small, deterministic phrase/regex engine with negation, figurative-speech and context guards.

Both the crisis detector and the reply checker are rule sets in YAML files beside this module
(``data/crisis_patterns.yaml``, ``data/reply_patterns.yaml``). A file has:

* ``labels``: for each label (a crisis type, a violation, a requirement) a block with ``rules``
  (regexes, matched case-insensitively unless ``case_sensitive: true``), optional ``defaults``
  for its rules and optional ``meta`` (free-form, e.g. when a reply rule applies);
* ``figurative``: regexes of idioms whose span is blanked before any rule runs ("this deadline is
  killing me" must not reach the rule for "kill");
* ``negation``: a cue regex, the phrases that contain a negation word but do not negate
  (``ignore``: "not sure", "can't stop"), and the window in words; a rule with ``negatable``
  (the default) does not fire when a cue sits in that window before it, in the same clause;
* ``context`` (optional): ``dystonic`` (ego-dystonic cues such as "intrusive", "it terrifies me"),
  ``historical`` ("used to", "years ago") and ``current`` ("again", "lately"). A rule with
  ``dystonic: true`` is silenced when the text has a dystonic cue; one with ``historical: true``
  is silenced in a sentence that is about the past and has no current cue.

Per rule, ``with`` is a regex that must also match somewhere in the text and ``unless`` one that
must not; ``types`` (a list of crisis types) makes the rule count only when the caller says the
text answers one of those crises (a reply rule such as "the doctor today" is enough help for mania,
not for a means request). Positions are kept (blanking replaces with spaces), so evidence is the original span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

DATA_DIR = Path(__file__).resolve().parent / "data"

_RULE_KEYS = {"re", "negatable", "with", "unless", "dystonic", "historical", "case_sensitive", "types"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u201c": '"', "\u201d": '"'})
_SENTENCE_END = re.compile(r"[.!?;\n]+")
_CLAUSE_BREAK = re.compile(r",|\b(?:but|and|because|though|although|so)\b", re.IGNORECASE)


class PatternFileError(ValueError):
    """A pattern file is malformed; the message names the file, the label and the rule."""


@dataclass(frozen=True)
class Rule:
    """One regex for one label, with its guards (see the module docstring)."""

    label: str
    regex: re.Pattern[str]
    negatable: bool = True
    requires: re.Pattern[str] | None = None
    unless: re.Pattern[str] | None = None
    dystonic: bool = False
    historical: bool = False
    types: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Hit:
    """A rule that fired: its label, the matched span of the original text and where it is."""

    label: str
    span: str
    start: int
    end: int


@dataclass
class RuleSet:
    """Compiled rules of one pattern file; :meth:`find` runs them on a text."""

    rules: list[Rule]
    figurative: list[re.Pattern[str]] = field(default_factory=list)
    negation_cue: re.Pattern[str] | None = None
    negation_ignore: re.Pattern[str] | None = None
    negation_window: int = 3
    dystonic: re.Pattern[str] | None = None
    historical: re.Pattern[str] | None = None
    current: re.Pattern[str] | None = None
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.label for r in self.rules))

    def prepare(self, text: str) -> str:
        """Normalised text of the same length: curly quotes straightened, idioms blanked."""
        text = text.translate(_APOSTROPHES)
        for pattern in self.figurative:
            text = pattern.sub(lambda m: " " * len(m.group(0)), text)
        return text

    def find(self, text: str, labels: set[str] | None = None, context_types: Sequence[str] = ()) -> list[Hit]:
        """The first un-suppressed hit of every label (restricted to ``labels`` when given).

        Args:
            text: The text to match.
            labels: Only these labels' rules run (all when ``None``).
            context_types: Crisis types of the text this one answers; a rule with ``types`` runs
                only when one of them is here.
        """
        context = frozenset(context_types)
        prepared = self.prepare(text)
        is_dystonic = bool(self.dystonic and self.dystonic.search(prepared))
        hits: dict[str, Hit] = {}
        for rule in self.rules:
            if rule.label in hits or (labels is not None and rule.label not in labels):
                continue
            if rule.types and not (rule.types & context):
                continue
            if rule.requires is not None and not rule.requires.search(prepared):
                continue
            if rule.unless is not None and rule.unless.search(prepared):
                continue
            if rule.dystonic and is_dystonic:
                continue
            for m in rule.regex.finditer(prepared):
                if rule.negatable and self.negated(prepared, m.start()):
                    continue
                if rule.historical and self.about_the_past(prepared, m.start(), m.end()):
                    continue
                hits[rule.label] = Hit(rule.label, text[m.start() : m.end()], m.start(), m.end())
                break
        return [hits[label] for label in self.labels if label in hits]

    def negated(self, text: str, start: int) -> bool:
        """Whether a negation cue sits within the window before ``start``, in the same clause."""
        if self.negation_cue is None:
            return False
        before = text[_sentence_bounds(text, start, start)[0] : start]
        clause = _CLAUSE_BREAK.split(before)[-1]
        if self.negation_ignore is not None:
            clause = self.negation_ignore.sub(" ", clause)
        window = " ".join(clause.split()[-self.negation_window :])
        return bool(self.negation_cue.search(window))

    def about_the_past(self, text: str, start: int, end: int) -> bool:
        """Whether the sentence around the span speaks of the past without bringing it to now."""
        if self.historical is None:
            return False
        lo, hi = _sentence_bounds(text, start, end)
        sentence = text[lo:hi]
        return bool(self.historical.search(sentence)) and not (self.current and self.current.search(sentence))


def _sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    lo = 0
    for m in _SENTENCE_END.finditer(text, 0, start):
        lo = m.end()
    nxt = _SENTENCE_END.search(text, end)
    return lo, (nxt.start() if nxt else len(text))


def _compile(pattern: Any, where: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise PatternFileError(f"{where}: must be a non-empty regex string (got {pattern!r})")
    try:
        return re.compile(pattern, flags)
    except re.error as e:
        raise PatternFileError(f"{where}: invalid regex {pattern!r} ({e}); fix the pattern") from None


def _types(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PatternFileError(f"{where}.types: must be a crisis type or a list of them (got {value!r})")
    return frozenset(value)


def _optional(spec: Mapping[str, Any], key: str, where: str) -> re.Pattern[str] | None:
    return _compile(spec[key], f"{where}.{key}") if spec.get(key) is not None else None


def build_rule_set(data: Mapping[str, Any], source: str = "<dict>") -> RuleSet:
    """Compile a pattern file's parsed YAML; errors name the file, the label and the rule index."""
    if not isinstance(data, Mapping) or not isinstance(data.get("labels"), Mapping):
        raise PatternFileError(f"{source}: needs a top-level 'labels' mapping of label -> {{rules: [...]}}")
    rules: list[Rule] = []
    meta: dict[str, dict[str, Any]] = {}
    for label, block in data["labels"].items():
        where = f"{source}: labels.{label}"
        if not isinstance(block, Mapping) or not isinstance(block.get("rules"), list) or not block["rules"]:
            raise PatternFileError(f"{where}: needs a non-empty 'rules' list")
        defaults = dict(block.get("defaults") or {})
        meta[label] = dict(block.get("meta") or {})
        for i, raw in enumerate(block["rules"]):
            spec = {**defaults, **({"re": raw} if isinstance(raw, str) else dict(raw))}
            unknown = set(spec) - _RULE_KEYS
            if unknown:
                raise PatternFileError(f"{where}.rules[{i}]: unknown key(s) {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
            rw = f"{where}.rules[{i}]"
            flags = 0 if spec.get("case_sensitive") else re.IGNORECASE
            rules.append(
                Rule(
                    label=str(label),
                    regex=_compile(spec.get("re"), f"{rw}.re", flags),
                    negatable=bool(spec.get("negatable", True)),
                    requires=_optional(spec, "with", rw),
                    unless=_optional(spec, "unless", rw),
                    dystonic=bool(spec.get("dystonic", False)),
                    historical=bool(spec.get("historical", False)),
                    types=_types(spec.get("types"), rw),
                )
            )
    neg = data.get("negation") or {}
    ctx = data.get("context") or {}
    return RuleSet(
        rules=rules,
        figurative=[_compile(p, f"{source}: figurative[{i}]") for i, p in enumerate(data.get("figurative") or [])],
        negation_cue=_optional(neg, "cue", f"{source}: negation"),
        negation_ignore=_optional(neg, "ignore", f"{source}: negation"),
        negation_window=int(neg.get("window_words", 3)),
        dystonic=_optional(ctx, "dystonic", f"{source}: context"),
        historical=_optional(ctx, "historical", f"{source}: context"),
        current=_optional(ctx, "current", f"{source}: context"),
        meta=meta,
        source=source,
    )


@lru_cache(maxsize=None)
def load_rule_set(path: str | Path) -> RuleSet:
    """Load and compile a pattern file (cached per path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pattern file {path} not found")
    return build_rule_set(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))
