"""Read and write patient profiles: the bank, its fixed split, YAML/JSONL files, LLM4CBT personas.

One entry point, :func:`load_profiles`, takes any profile *source*:

* ``"bank"``, ``"bank:train"``, ``"bank:test"``: the profiles written for cbtgym
  (``bank/profiles.yaml``) and the fixed train/test split by id (``bank/split.json``);
* ``"llm4cbt"``: the 9 personas of the LLM4CBT paper, read at run time from
  ``$CBTGYM_SHARED_DIR/data/llm4cbt-personas`` (never copied into the repository; the loader never
  guesses where that folder is: set the variable, or pass the persona folder's path);
* a ``.yaml``/``.yml`` file (a list of profiles, one profile mapping, a mapping with key
  ``profiles``, or one LLM4CBT persona), a ``.jsonl`` file (one profile per line), or a
  directory of such files (read in sorted order).

Every error is a :class:`~cbtgym.profiles.schema.ProfileError` whose message names the file
(with the line, or the item number where the profile has no id yet), the profile id and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..strict_yaml import DuplicateKeyError, load_yaml
from .schema import ATTITUDES, PatientProfile, ProfileError

BANK_DIR = Path(__file__).resolve().parent / "bank"
BANK_FILE = BANK_DIR / "profiles.yaml"
SPLIT_FILE = BANK_DIR / "split.json"
SPLITS = ("train", "test")
PROFILE_SUFFIXES = (".yaml", ".yml", ".jsonl")
#: Names the ``shared/`` folder that holds the LLM4CBT personas (the ``"llm4cbt"`` source).
SHARED_ENV = "CBTGYM_SHARED_DIR"
LLM4CBT_SUBDIR = Path("data") / "llm4cbt-personas"
#: ``attitude`` values accepted by the loaders: one attitude, or ``"both"`` (each profile twice).
ATTITUDE_CHOICES = ATTITUDES + ("both",)

SOURCE_HELP = (
    "a profile source is 'bank', 'bank:train', 'bank:test', 'llm4cbt', "
    "a .yaml/.yml/.jsonl file, or a directory of such files"
)

# The LLM4CBT persona format: everything the paper's simulated patient knows sits under ``Input``.
LLM4CBT_INPUT_KEYS = (
    "SYMPTOM",
    "DESCRIPTION",
    "SITUATION",
    "REACTION",
    "AUTOMATIC_THOUGHT",
    "PATIENT_AGE",
    "PATIENT_GENDER",
    "PATIENT_OCCUPATION",
)
# Schema field -> LLM4CBT key, so a validation error points at the key the file actually has.
_LLM4CBT_FIELDS = {
    "disorder": "Input.SYMPTOM",
    "disorder_description": "Input.DESCRIPTION",
    "situation": "Input.SITUATION",
    "reactions": "Input.REACTION",
    "automatic_thoughts": "Input.AUTOMATIC_THOUGHT",
    "persona.age": "Input.PATIENT_AGE",
    "persona.gender": "Input.PATIENT_GENDER",
    "persona.occupation": "Input.PATIENT_OCCUPATION",
    "background": "Story",
}


# --------------------------------------------------------------------------- locations


def llm4cbt_dir() -> Path:
    """The folder of LLM4CBT persona files: ``$CBTGYM_SHARED_DIR/data/llm4cbt-personas``.

    The location is the caller's to give: a package that looked for ``../shared`` beside its own
    files would read whatever sits there on one machine and fail on the next.

    Raises:
        FileNotFoundError: When the variable is unset or the folder is absent.
    """
    env = os.environ.get(SHARED_ENV)
    if not env:
        raise FileNotFoundError(
            f"the 'llm4cbt' profile source reads the LLM4CBT personas from ${SHARED_ENV}/{LLM4CBT_SUBDIR.as_posix()}, "
            f"and ${SHARED_ENV} is not set; set it to the shared folder, or pass the persona folder's path instead"
        )
    path = Path(env).expanduser() / LLM4CBT_SUBDIR
    if not path.is_dir():
        raise FileNotFoundError(
            f"LLM4CBT personas not found at {path} (from ${SHARED_ENV}); point ${SHARED_ENV} at the folder that "
            f"holds {LLM4CBT_SUBDIR.as_posix()}, or pass the persona folder's path instead"
        )
    return path


# --------------------------------------------------------------------------- public API


def load_profiles(source: str | os.PathLike[str], *, attitude: str | None = None) -> list[PatientProfile]:
    """Load and validate profiles from any source.

    Args:
        source: ``"bank"``, ``"bank:train"``, ``"bank:test"``, ``"llm4cbt"``, or a path to a
            ``.yaml``/``.yml``/``.jsonl`` file or a directory of such files (LLM4CBT persona files
            are recognised by their ``Input:`` block).
        attitude: ``None`` keeps each profile's own attitude (LLM4CBT personas, which have none,
            become ``"active"``). ``"active"`` or ``"passive"`` sets every profile's attitude;
            ``"both"`` yields every profile twice, with ids suffixed ``-active`` and ``-passive``.

    Returns:
        The profiles, in file order (files of a directory in sorted order).

    Raises:
        ProfileError: A profile or file is invalid, or two profiles share an id; the message names
            the file, the profile id (or line/item number) and the field.
        FileNotFoundError: The path, or ``$CBTGYM_SHARED_DIR`` for ``"llm4cbt"``, does not exist or is unset.
        ValueError: ``source`` or ``attitude`` is not one of the accepted values.
    """
    if attitude is not None and attitude not in ATTITUDE_CHOICES:
        raise ValueError(f"attitude must be None or one of {ATTITUDE_CHOICES} (got {attitude!r})")
    profiles = [p for p, _ in _load_located(source)]
    if attitude is None:
        return profiles
    return _with_attitude(profiles, attitude)


def load_split(split: str) -> list[PatientProfile]:
    """The bank profiles of one fixed split (``"train"`` or ``"test"``), in bank order."""
    return load_profiles(f"bank:{split}")


def split_ids() -> dict[str, list[str]]:
    """The fixed split of the bank: ``{"train": [ids], "test": [ids]}``.

    Raises:
        ProfileError: ``split.json`` lacks a split, lists an id twice, or puts an id in both splits.
    """
    src = str(SPLIT_FILE)
    try:
        data = json.loads(SPLIT_FILE.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProfileError(f"line {e.lineno}: not valid JSON ({e.msg})", source=src) from None
    if not isinstance(data, Mapping) or set(data) != set(SPLITS):
        raise ProfileError(f"must be a mapping with exactly the keys {list(SPLITS)}", source=src)
    seen: dict[str, str] = {}
    for name in SPLITS:
        ids = data[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ProfileError("must be a list of profile ids", source=src, field=name)
        for pid in ids:
            if pid in seen:
                raise ProfileError(
                    f"listed in '{seen[pid]}' and again in '{name}'; each id belongs to one split",
                    source=src, profile_id=pid, field=name,
                )
            seen[pid] = name
    return {name: list(data[name]) for name in SPLITS}


def save_profiles(profiles: Iterable[PatientProfile], path: str | os.PathLike[str]) -> Path:
    """Write profiles to ``.jsonl`` (one per line) or ``.yaml``/``.yml`` (a list); :func:`load_profiles` reads them back.

    Returns:
        The path written.
    """
    path = Path(path)
    records = [p.to_dict() for p in profiles]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(records, sort_keys=False, allow_unicode=True, width=100)
    else:
        raise ValueError(f"save_profiles writes .jsonl, .yaml or .yml files (got {path.name!r})")
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Raw:
    """One profile mapping before validation, with where it came from."""

    data: Any
    where: str  # "file:line" or "file[#index]": names the spot when the profile has no id
    label: str  # the profile's ``source`` unless the mapping sets its own
    llm4cbt: bool = False


def _load_located(source: str | os.PathLike[str]) -> list[tuple[PatientProfile, str]]:
    """Validated profiles with their locations; ids are unique across the whole source."""
    if isinstance(source, str) and (source == "bank" or source.startswith("bank:")):
        return _load_bank(source)
    if source == "llm4cbt":
        raws = _raw_from_dir(llm4cbt_dir())
    else:
        path = Path(source)
        if path.is_dir():
            raws = _raw_from_dir(path)
        elif path.is_file():
            raws = _raw_from_file(path)
        else:
            raise FileNotFoundError(f"profile source {str(source)!r} does not exist; {SOURCE_HELP}")
    return _validate_all(raws)


def _load_bank(source: str) -> list[tuple[PatientProfile, str]]:
    located = _validate_all(_raw_from_file(BANK_FILE, label="bank"))
    if source == "bank":
        return located
    split = source.split(":", 1)[1]
    if split not in SPLITS:
        raise ValueError(f"unknown bank split {split!r}; use 'bank', 'bank:train' or 'bank:test'")
    wanted = set(split_ids()[split])
    missing = sorted(wanted - {p.id for p, _ in located})
    if missing:
        raise ProfileError(
            f"ids {missing} are not in {BANK_FILE.name}; remove them from the split or add the profiles",
            source=str(SPLIT_FILE), field=split,
        )
    return [(p, w) for p, w in located if p.id in wanted]


def _raw_from_dir(path: Path) -> list[_Raw]:
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix in PROFILE_SUFFIXES)
    if not files:
        raise ProfileError(f"no profile files ({', '.join(PROFILE_SUFFIXES)}) in this directory", source=str(path))
    return [raw for f in files for raw in _raw_from_file(f)]


def _raw_from_file(path: Path, label: str | None = None) -> list[_Raw]:
    label = label or str(path)
    if path.suffix == ".jsonl":
        return _raw_from_jsonl(path, label)
    if path.suffix in (".yaml", ".yml"):
        return _raw_from_yaml(path, label)
    raise ProfileError(f"unsupported file type; {SOURCE_HELP}", source=str(path))


def _raw_from_jsonl(path: Path, label: str) -> list[_Raw]:
    raws = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise ProfileError(f"not valid JSON ({e.msg}, column {e.colno}); fix or remove that line", source=f"{path}:{n}") from None
        except DuplicateKeyError as e:
            raise ProfileError(f"{e}; keep one of them", source=f"{path}:{n}") from None
        raws.append(_Raw(data, f"{path}:{n}", label))
    if not raws:
        raise ProfileError("the file holds no profiles", source=str(path))
    return raws


def _raw_from_yaml(path: Path, label: str) -> list[_Raw]:
    text = path.read_text(encoding="utf-8")
    try:
        data = load_yaml(path, text=text)  # a key written twice is an error, not the last one silently
        # The nodes give each profile's line, for errors about a profile that has no id.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except DuplicateKeyError as e:
        raise ProfileError(str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProfileError(f"invalid YAML at {at}{problem}", source=str(path)) from None
    if data is None:
        raise ProfileError("the file is empty; it should hold a list of profiles", source=str(path))

    items_node = root
    if isinstance(data, Mapping) and "profiles" in data:
        items_node = next(v for k, v in root.value if k.value == "profiles")
        data = data["profiles"]
        if not isinstance(data, list):
            raise ProfileError("must be a list of profile mappings", source=str(path), field="profiles")
    elif isinstance(data, Mapping):
        if _is_llm4cbt(data):
            return [_Raw(data, str(path), "llm4cbt", llm4cbt=True)]
        return [_Raw(data, f"{path}:{root.start_mark.line + 1}", label)]
    elif not isinstance(data, list):
        raise ProfileError(
            f"expected a list of profiles, a mapping with key 'profiles', or one profile (got {type(data).__name__})",
            source=str(path),
        )
    if not data:
        raise ProfileError("the file holds no profiles", source=str(path))
    # Line numbers from the YAML nodes let an error point at a profile that has no id.
    lines = [node.start_mark.line + 1 for node in items_node.value]
    return [_Raw(item, f"{path}:{line} (profile #{i + 1})", label) for i, (item, line) in enumerate(zip(data, lines))]


def _validate_all(raws: Sequence[_Raw]) -> list[tuple[PatientProfile, str]]:
    out: list[tuple[PatientProfile, str]] = []
    first_seen: dict[str, str] = {}
    for raw in raws:
        profile = _from_llm4cbt(raw) if raw.llm4cbt else _from_mapping(raw)
        if profile.id in first_seen:
            raise ProfileError(
                f"duplicate id: first defined at {first_seen[profile.id]}; give each profile a unique id",
                source=raw.where, profile_id=profile.id, field="id",
            )
        first_seen[profile.id] = raw.where
        out.append((profile, raw.where))
    return out


def _from_mapping(raw: _Raw) -> PatientProfile:
    profile = PatientProfile.from_dict(raw.data, source=raw.where)
    has_own_source = isinstance(raw.data, Mapping) and raw.data.get("source")
    return profile if has_own_source else replace(profile, source=raw.label)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a JSON object naming a key twice is an error (``json`` keeps the last silently)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


# --------------------------------------------------------------------------- LLM4CBT


def _is_llm4cbt(data: Mapping[str, Any]) -> bool:
    block = data.get("Input")
    return isinstance(block, Mapping) and "AUTOMATIC_THOUGHT" in block and "SYMPTOM" in block


def _from_llm4cbt(raw: _Raw) -> PatientProfile:
    """Map one LLM4CBT persona onto the schema (id ``llm4cbt-<file stem>``, no core belief)."""
    path = Path(raw.where)
    pid = f"llm4cbt-{path.stem}"
    block = raw.data["Input"]
    for key in LLM4CBT_INPUT_KEYS:
        value = block.get(key)
        if value is None or not str(value).strip():
            raise ProfileError("is required in an LLM4CBT persona", source=raw.where, profile_id=pid, field=f"Input.{key}")
    story = raw.data.get("Story")
    data = {
        "id": pid,
        "persona": {
            "age": block["PATIENT_AGE"],
            "gender": str(block["PATIENT_GENDER"]),
            "occupation": str(block["PATIENT_OCCUPATION"]),
        },
        "disorder": str(block["SYMPTOM"]),
        "disorder_description": str(block["DESCRIPTION"]),
        "situation": str(block["SITUATION"]),
        "reactions": [str(block["REACTION"])],
        "automatic_thoughts": [str(block["AUTOMATIC_THOUGHT"])],
        "core_belief": None,
        # Read from ../shared at run time and never labelled in the repository: no distortion labels.
        "distortions": [],
        "attitude": "active",
        "background": story if isinstance(story, str) and story.strip() else None,
        "source": "llm4cbt",
    }
    try:
        return PatientProfile.from_dict(data, source=raw.where)
    except ProfileError as e:
        field = _LLM4CBT_FIELDS.get(e.field or "", e.field)
        raise ProfileError(e.detail, source=raw.where, profile_id=pid, field=field) from None


# --------------------------------------------------------------------------- attitudes


def _with_attitude(profiles: Sequence[PatientProfile], attitude: str) -> list[PatientProfile]:
    if attitude != "both":
        return [p if p.attitude == attitude else p.with_attitude(attitude) for p in profiles]
    return [replace(p.with_attitude(a), id=f"{p.id}-{a}") for p in profiles for a in ATTITUDES]
