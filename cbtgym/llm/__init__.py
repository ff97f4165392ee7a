"""Generic LLM plumbing shared by judges, the profile generator and the benchmark.

* :mod:`cbtgym.llm.prompts`: the one prompt loader (``string.Template`` files) and :func:`fence`;
* :mod:`cbtgym.llm.json_reply`: tolerant JSON extraction from a reply, capped string fields;
* :mod:`cbtgym.llm.cache`: the SQLite cache of replies (failures are never stored);
* :mod:`cbtgym.llm.generation`: batched generation with parsing and retries, and :class:`LLMCaller`.

It depends only on :mod:`cbtgym.backends`, so backends, transcripts, profiles and patients
never need to import ``rewards``. Sentence embeddings are :mod:`cbtgym.embeddings`.
"""

from .cache import JudgeCache, cache_key, default_cache, resolve_cache
from .generation import Attempted, LLMCaller, generate_cached, generate_parsed
from .json_reply import extract_json, text_field
from .prompts import DATA_NOTICE, fence, load_prompt, render_prompt

__all__ = [
    "DATA_NOTICE", "Attempted", "JudgeCache", "LLMCaller", "cache_key", "default_cache", "extract_json", "fence",
    "generate_cached", "generate_parsed", "load_prompt", "render_prompt", "resolve_cache", "text_field",
]
