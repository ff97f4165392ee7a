"""Token counts of a benchmark run, and their price in money.

The ``prices`` config field maps a model to its price per million tokens::

    prices:
      embedded: {input_per_1m: 0, output_per_1m: 0}            # local compute shown as $0
      meta-llama/Llama-3.1-70B-Instruct: {input_per_1m: 0.6, output_per_1m: 0.8}

A key names a model as its backend spec does: the whole spec string (``"embedded"``, ``"hf:DIR"``,
``"openai:URL#MODEL"``), the model after ``#`` of an OpenAI spec, the ``model`` of a dict spec, or the
``name`` of a backend passed as an object. A row
whose models are not all priced has no money (``None``), never a partial sum.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..training.config import ConfigError

PRICE_FIELDS = ("input_per_1m", "output_per_1m")


def check_prices(prices: Any) -> dict[str, dict[str, float]]:
    """The ``prices`` field as ``{key: {input_per_1m, output_per_1m}}``; a YAML/JSON string is parsed first."""
    import yaml

    if isinstance(prices, str):
        prices = yaml.safe_load(prices) if prices.strip() else {}
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise ConfigError("prices: give a mapping {model: {input_per_1m: X, output_per_1m: Y}} (US$ per million tokens)")
    out = {}
    for key, price in prices.items():
        if not isinstance(price, Mapping) or set(price) != set(PRICE_FIELDS):
            raise ConfigError(f"prices: entry {key!r} must have exactly {list(PRICE_FIELDS)} (got {price!r})")
        try:
            values = {k: float(price[k]) for k in PRICE_FIELDS}
        except (TypeError, ValueError):
            raise ConfigError(f"prices: entry {key!r} must give numbers (got {dict(price)!r})") from None
        if any(v < 0 for v in values.values()):
            raise ConfigError(f"prices: entry {key!r} has a negative price; give US$ per million tokens >= 0")
        out[str(key)] = values
    return out


def names_of(spec: Any) -> list[str]:
    """The keys a price may be given under for backend ``spec`` (most specific first)."""
    from .variants import spec_key

    from ..backends.base import Backend

    names = []
    if isinstance(spec, Backend):
        names.append(spec.name)
    elif isinstance(spec, Mapping):
        names += [str(spec[k]) for k in ("model", "name") if spec.get(k)]
    elif spec is not None:
        text = str(spec)
        names += [text, text.partition("#")[2]] if "#" in text else [text]
    key = spec_key(spec) if spec is not None else ""
    names += ["embedded"] if key == "hf:embedded" else [key]
    return [n for n in dict.fromkeys(names) if n]


def price_of(spec: Any, prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    """The price of the model behind ``spec``, or ``None`` when ``prices`` has none."""
    return next((prices[n] for n in names_of(spec) if n in prices), None)


def money(parts: Sequence[tuple[Any, float, float]], prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """US$ of ``(spec, prompt tokens, completion tokens)`` parts; ``None`` when a part with tokens has no price."""
    total = 0.0
    for spec, prompt, completion in parts:
        if not (prompt or completion):
            continue
        price = price_of(spec, prices)
        if price is None:
            return None
        total += (prompt * price["input_per_1m"] + completion * price["output_per_1m"]) / 1e6
    return round(total, 6)


def count_tokens(backend: Any, conversations: Sequence[Sequence[Mapping[str, str]]] = (), texts: Sequence[str] = ()) -> list[int]:
    """Tokens of each prompt (chat template applied) and then of each text, with the backend's tokenizer when it
    has one (hf), else as words."""
    tok = getattr(getattr(backend, "inner", backend), "tokenizer", None)
    if tok is None:
        return [sum(len(m["content"].split()) for m in c) for c in conversations] + [len(t.split()) for t in texts]
    prompts = [len(tok.apply_chat_template(list(c), tokenize=True, add_generation_prompt=c[-1]["role"] != "assistant",
                                           continue_final_message=c[-1]["role"] == "assistant", return_dict=False))
               for c in conversations]
    return prompts + [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
