"""Datadog tag rules: normalize a tag, sort user tags into valid and invalid, parse DD_TAGS.

Contract
- ``normalize_tag(text, max_chars=200) -> str``: the Datadog Agent's tag normalization
  (datadog-agent ``pkg/trace/traceutil.NormalizeTag``): lowercase; leading characters that
  are neither letters nor ``:`` dropped; letters, decimal digits and ``: . / -`` kept; every
  run of other characters (``_`` included) becomes one ``_``, a trailing run is dropped;
  at most ``max_chars`` characters. May return "".
- ``validate_tags(pairs) -> (valid, invalid)``: each input is ``key:value`` (or a bare
  ``key``). Invalid: empty, not starting with a letter (Datadog: "tags must start with a
  letter"; silently trimming would change the key), an empty key or an empty value around
  the first ``:``. Valid ones come back normalized (so ``Team:My App`` gives
  ``team:my_app``), duplicates removed, input order kept. Invalid ones come back as given,
  for the caller's single warning.
- ``parse_dd_tags(value) -> list[str]``: the format Datadog libraries read from ``DD_TAGS``
  (dd-trace-py ``parse_tags_str``): pairs separated by commas when the text has a comma,
  else by whitespace; ``key:value`` split at the first ``:`` with blanks around key and
  value stripped; a part without ``:`` is a bare tag. ``key=value`` is not a Datadog
  form: it stays one bare tag (normalized later to ``key_value``).

Non-goals: reserved keys (``service``, ``env``...) are not policed here; no logging here.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

MAX_TAG_CHARS = 200


def normalize_tag(text: str, max_chars: int = MAX_TAG_CHARS) -> str:
    out: List[str] = []
    cut = False  # a run of illegal characters is pending
    count = 0
    for ch in text:
        if ch.isupper():
            low = ch.lower()
            if len(low) == 1:
                ch = low
        if ch.isalpha() or ch == ":":
            pass
        elif not out:
            continue  # cannot start a tag
        elif not (ch.isdecimal() or ch in "./-"):
            cut = True
            count += 1
            if count >= max_chars:
                break
            continue
        if cut:
            out.append("_")
            cut = False
        out.append(ch)
        count += 1
        if count >= max_chars:
            break
    return "".join(out)


def validate_tags(pairs: Iterable[str]) -> Tuple[List[str], List[str]]:
    valid: List[str] = []
    invalid: List[str] = []
    seen = set()
    for raw in pairs:
        text = (raw or "").strip()
        key, sep, value = text.partition(":")
        key, value = key.strip(), value.strip()
        if not text or not text[0].isalpha() or (sep and (not key or not value)):
            invalid.append(raw)
            continue
        tag = normalize_tag(f"{key}:{value}" if sep else key)
        if not tag:
            invalid.append(raw)
        elif tag not in seen:
            seen.add(tag)
            valid.append(tag)
    return valid, invalid


def parse_dd_tags(value: str) -> List[str]:
    if not value or not value.strip():
        return []
    parts = value.split(",") if "," in value else value.split()
    tags: List[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition(":")
        tags.append(f"{key.strip()}:{val.strip()}" if sep else part)
    return tags
