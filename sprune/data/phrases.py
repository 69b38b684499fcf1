"""Phrase tables of the offline spoken-intent corpus: what bank customers say on the phone.

One YAML file per language, `sprune/resources/phrases-<tag>.yaml`:

    lang: en-US                 # the MINDS-14 language tag
    voice: en-us                # the espeak-ng voice that speaks it
    intents:                    # every one of the 14 MINDS-14 intents,
      balance:                  #   each with >= 5 distinct sentences
        - What's the balance on my checking account?

Sentences are written exactly as spoken (numbers in words), so they double as transcripts.
espeak-ng has no Australian English voice: en-AU is spoken by the default British voice `en`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import yaml

from sprune.errors import UserError

# The 14 e-banking intents of MINDS-14 (paper 000, appendix), labelled as in the dataset.
INTENTS: tuple[str, ...] = (
    "business_loan", "freeze", "abroad", "app_error", "direct_debit", "card_issues",
    "joint_account", "balance", "high_value_payment", "atm_limit", "address", "pay_bill",
    "cash_deposit", "latest_transactions",
)

# Every language with a phrase table, as MINDS-14 tags.
LANGUAGES: tuple[str, ...] = (
    "en-US", "en-GB", "en-AU", "fr-FR", "de-DE", "es-ES", "it-IT", "nl-NL", "pl-PL",
)

# The six languages of the default corpus (issue 2): about 2,000 utterances.
DEFAULT_LANGUAGES: tuple[str, ...] = ("en-US", "en-GB", "fr-FR", "de-DE", "es-ES", "it-IT")

MIN_PHRASINGS = 5

# Short names; a bare language code means its main MINDS-14 region.
_ALIASES = {"en": "en-US", "us": "en-US", "gb": "en-GB", "uk": "en-GB", "en-uk": "en-GB",
            "au": "en-AU", "fr": "fr-FR", "de": "de-DE", "es": "es-ES", "it": "it-IT",
            "nl": "nl-NL", "pl": "pl-PL"}


@dataclass(frozen=True)
class PhraseTable:
    """The sentences of one language: intent -> distinct phrasings, in file order."""

    lang: str
    voice: str
    phrasings: dict[str, tuple[str, ...]]


def resolve_language(name: str) -> str:
    """Map a language name to its tag: 'fr' / 'FR' / 'fr_fr' / 'fr-FR' -> 'fr-FR'.

    Unknown names are a `UserError` listing the known tags.
    """
    key = name.strip().lower().replace("_", "-")
    by_lower = {tag.lower(): tag for tag in LANGUAGES}
    if key in by_lower:
        return by_lower[key]
    if key in _ALIASES:
        return _ALIASES[key]
    raise UserError(f"unknown language '{name}'; known: {', '.join(LANGUAGES)} "
                    f"(or short names {', '.join(sorted(_ALIASES))}, or 'all')")


def parse_languages(spec: str) -> list[str]:
    """Parse a comma-separated language list ('en,fr-FR' or 'all') into unique tags, in order."""
    if spec.strip().lower() == "all":
        return list(LANGUAGES)
    tags: list[str] = []
    for name in spec.split(","):
        if not name.strip():
            raise UserError(f"empty language name in '{spec}'; give a comma-separated list "
                            "such as en-US,fr-FR")
        tag = resolve_language(name)
        if tag not in tags:
            tags.append(tag)
    return tags


def parse_intents(spec: str) -> list[str]:
    """Parse a comma-separated intent list ('balance,freeze' or 'all') into labels, in order."""
    if spec.strip().lower() == "all":
        return list(INTENTS)
    intents: list[str] = []
    for name in spec.split(","):
        label = name.strip().lower().replace(" ", "_")
        if label not in INTENTS:
            raise UserError(f"unknown intent '{name.strip()}'; known: {', '.join(INTENTS)}")
        if label not in intents:
            intents.append(label)
    return intents


@functools.lru_cache(maxsize=None)
def load_phrases(lang: str) -> PhraseTable:
    """The phrase table of `lang` (a tag or short name), checked for completeness."""
    lang = resolve_language(lang)
    name = f"phrases-{lang}.yaml"
    path = resources.files("sprune") / "resources" / name
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    where = f"sprune/resources/{name}"
    if not isinstance(data, dict) or set(data) != {"lang", "voice", "intents"}:
        raise UserError(f"{where}: needs exactly the keys lang, voice and intents")
    if data["lang"] != lang:
        raise UserError(f"{where}: lang is '{data['lang']}'; it must be '{lang}'")
    intents = data["intents"]
    if not isinstance(intents, dict) or set(intents) != set(INTENTS):
        missing = sorted(set(INTENTS) - set(intents or {}))
        extra = sorted(set(intents or {}) - set(INTENTS))
        raise UserError(f"{where}: intents must be exactly the 14 MINDS-14 labels "
                        f"(missing: {missing or 'none'}, unknown: {extra or 'none'})")
    phrasings: dict[str, tuple[str, ...]] = {}
    for intent in INTENTS:
        sentences = intents[intent]
        if (not isinstance(sentences, list) or not all(isinstance(s, str) and s.strip()
                                                       for s in sentences)):
            raise UserError(f"{where}: intents.{intent} must be a list of sentences")
        sentences = [" ".join(s.split()) for s in sentences]
        if len(set(sentences)) != len(sentences) or len(sentences) < MIN_PHRASINGS:
            raise UserError(f"{where}: intents.{intent} needs at least {MIN_PHRASINGS} "
                            f"distinct sentences (has {len(set(sentences))})")
        phrasings[intent] = tuple(sentences)
    return PhraseTable(lang=lang, voice=str(data["voice"]), phrasings=phrasings)
