"""Patient profiles: the schema, the bank written for cbtgym with its fixed split, and loaders.

``load_profiles("bank:train")`` / ``load_profiles("bank:test")`` give the fixed split,
``load_profiles("llm4cbt")`` the 9 LLM4CBT personas (read from ``$CBTGYM_SHARED_DIR``), and any
``.yaml``/``.jsonl`` file or directory works too. The LLM profile generator lives in
:mod:`cbtgym.profiles.generator` (imported on use: it builds on the judges' retry machinery).
"""

from .loaders import load_profiles, load_split, save_profiles, split_ids
from .schema import ATTITUDES, RISK_FLAGS, PatientProfile, Persona, ProfileError

__all__ = [
    "ATTITUDES",
    "RISK_FLAGS",
    "PatientProfile",
    "Persona",
    "ProfileError",
    "load_profiles",
    "load_split",
    "save_profiles",
    "split_ids",
]
