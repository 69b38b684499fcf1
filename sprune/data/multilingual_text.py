"""Sentences in English, French, Italian and Dutch from Debian text packages, for espeak-ng.

The offline multilingual ASR corpus (the four languages of Multilingual LibriSpeech that
paper 003's toy recipe uses) needs varied written sentences per language that install
without a network beyond Debian's archive. The sources (`SOURCES`), per language:

    en  the King James Bible (`sprune.lm.corpora`)   bible-kjv, bible-kjv-text
    fr  manual pages                                  manpages-fr, manpages-fr-dev
    it  fortune cookies                               fortunes-it
        manual pages                                  manpages-it, manpages-it-dev
    nl  manual pages                                  manpages-nl, manpages-nl-dev
    fr, it, nl  the Debian installation guide         installation-guide-amd64 (arch all)
                the aptitude manual                   aptitude-doc-<lang>
                the Debian FAQ                        debian-faq-<lang>

plus, when installed, the translated pages that dpkg, dpkg-dev, apt, man-db, adduser and
fakeroot ship themselves. Distinct sentences of 4-15 words measured with Debian 12's
packages: en 32,444, fr 8,607, it 10,917 (8,598 from the fortunes), nl 3,355 (4,741
with --max-words 20); about 6 s for all four on the 2-core build machine. Which files
belong to a package is read from dpkg's own file list (`/var/lib/dpkg/info/<package>.list`),
so the text does not depend on what else is installed: other packages also drop translated
pages into /usr/share/man/<lang>/.

Man pages are gzipped roff: macro lines (`.PP`, `.TP`, `.B word`, ...) end a paragraph and
are dropped (so is the no-fill text between `.nf`/`.fi` and `.EX`/`.EE`: examples); inline
escapes become their characters (`\\-` a hyphen, `\\(aq` an apostrophe, `\\('e` é); a font
span (`\\fBls\\fP`) is kept only when it holds plain words, otherwise (an option, a path)
the sentence around it is dropped. HTML pages (DocBook output) give the text of their block
elements; scripts, <pre>, tables of contents and navigation are skipped, and code elements
(<code>, class="command", ...) pass the same plain-words rule. Fortune files hold cookies
separated by `%` lines; the `-- Author` attribution lines are dropped, and fortunes-it's
ASCII accents (`e'`, `perche'`, `citta'`) become the letters they stand for (è, perché,
città).

A paragraph is split after `.`, `!` or `?` but not after an initial (and, for the
verse-structured KJV, also after `;` and `:`). A man page, HTML or fortune sentence is kept
when it starts with a capital letter and ends with `.`, `!` or `?` (not on an abbreviation
such as "bijv."), contains no digit, no code characters (`/ _ = < > { } [ ] | @ # $ % & * +
~ \\`), no word starting with `-` (an option), no initial or "b.v."-style abbreviation, no
word of two or more capitals (an acronym, a placeholder such as FILE), and reads as its
language: it holds more of that language's short function words than English ones and at
least one (translated pages keep some English paragraphs). It is then normalised as ASR
transcripts are (`sprune.data.tokenizer.normalize_text`: lower case, punctuation removed,
apostrophes inside words kept), must consist of the language's letters and apostrophes only,
and have `min_words`..`max_words` words. Duplicates are dropped.

`build_multilingual_text` sorts each language's sentences, shuffles them with the seed, and
writes `<out>/<lang>/{train,dev,test}.txt` (disjoint sentences, in the shuffled order),
`<split>.ids` (`<lang>-<n>`, unique over the three splits) and `stats.json` (counts, the
sources, the options; written last) with `sprune.lm.text.write_splits`. A language whose
stats.json holds the same options is left as it is.
"""
from __future__ import annotations

import gzip
import random
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from sprune.data.tokenizer import normalize_text
from sprune.errors import UserError

Log = Callable[[str], None]

LANGUAGES: tuple[str, ...] = ("en", "fr", "it", "nl")
# The tag of each language in utt2lang: the MINDS-14 tags `sprune speak --lang` resolves to.
LANGUAGE_TAGS: dict[str, str] = {"en": "en-US", "fr": "fr-FR", "it": "it-IT", "nl": "nl-NL"}

_BASE = "abcdefghijklmnopqrstuvwxyz'"
# Letters (lower case, NFC) a normalised sentence of each language may use, besides spaces.
ALPHABETS: dict[str, frozenset[str]] = {
    "en": frozenset(_BASE),
    "fr": frozenset(_BASE + "àâæçéèêëîïôœùûüÿ"),
    "it": frozenset(_BASE + "àèéìíîòóùú"),
    "nl": frozenset(_BASE + "áàäéèëêíïóöôúüûç"),
}

# Short, frequent function words: the language check counts them against English ones.
FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the of and to is that it for with as are this be by from or not an "
                    "which you your can will if when".split()),
    "fr": frozenset("le la les de des du un une et est en que qui dans pour pas sur au aux "
                    "par ce cette il elle ne se son sa ses avec ou vous sont".split()),
    "it": frozenset("il lo la le gli di del della dei delle un una e che non per con si da "
                    "nel nella sono è ma come più anche questo se ha".split()),
    "nl": frozenset("de het een van en is dat die niet op te voor met zijn wordt er als "
                    "om bij naar ook dit deze worden kan aan".split()),
}

# Abbreviations a sentence cannot end on (its final period is the abbreviation's).
ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset("etc eg ie vs cf mr mrs dr st no fig".split()),
    "fr": frozenset("etc ex cf env resp éd vol mme mlle chap fig".split()),
    "it": frozenset("ecc es cfr pag sig dott prof ca vol fig".split()),
    "nl": frozenset("bijv bv enz ca vgl nl resp incl evt zgn mr dhr mevr fig".split()),
}


@dataclass(frozen=True)
class Source:
    """Text of one kind ('man', 'html', 'fortune' or 'kjv') from Debian packages: the files
    each of `packages` installs below the folder `prefix` (relative to the file system root).
    `name` labels the source in stats.json."""

    name: str
    kind: str
    packages: tuple[str, ...]
    prefix: str = ""
    optional: tuple[str, ...] = ()   # read when installed, skipped otherwise


# Translated manual pages that base tools ship themselves: read when installed.
_BASE_PAGES = ("dpkg", "dpkg-dev", "apt", "man-db", "adduser", "fakeroot")



def _manuals(lang: str) -> tuple[Source, ...]:
    """The translated Debian manuals (HTML) of `lang`."""
    return (Source("installation guide", "html", ("installation-guide-amd64",),
                   f"usr/share/doc/installation-guide-amd64/{lang}"),
            Source("aptitude manual", "html", (f"aptitude-doc-{lang}",),
                   f"usr/share/doc/aptitude/html/{lang}"),
            Source("Debian FAQ", "html", (f"debian-faq-{lang}",),
                   f"usr/share/doc/debian/FAQ/{lang}"))


def _man_pages(lang: str) -> Source:
    return Source("man pages", "man", (f"manpages-{lang}", f"manpages-{lang}-dev"),
                  f"usr/share/man/{lang}", _BASE_PAGES)


SOURCES: dict[str, tuple[Source, ...]] = {
    "en": (Source("bible-kjv", "kjv", ("bible-kjv", "bible-kjv-text")),),
    "fr": (_man_pages("fr"),) + _manuals("fr"),
    "it": (Source("fortunes", "fortune", ("fortunes-it",), "usr/share/games/fortunes/it"),
           _man_pages("it")) + _manuals("it"),
    "nl": (_man_pages("nl"),) + _manuals("nl"),
}


def debian_packages(langs: Iterable[str] = LANGUAGES) -> list[str]:
    """The Debian packages the sentences of `langs` come from (for `apt-get install`)."""
    packages: list[str] = []
    for lang in langs:
        for source in SOURCES[check_language(lang)]:
            packages += [p for p in source.packages if p not in packages]
    return packages


def check_language(lang: str) -> str:
    """A language code of `LANGUAGES` ('FR', 'fr-FR' -> 'fr'); others are a `UserError`."""
    code = lang.strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGES:
        raise UserError(f"no sentence source for language '{lang}'; known: "
                        f"{', '.join(LANGUAGES)}")
    return code


def parse_languages(spec: str) -> list[str]:
    """'en,fr' or 'all' -> unique codes in order."""
    if spec.strip().lower() == "all":
        return list(LANGUAGES)
    codes: list[str] = []
    for name in spec.split(","):
        if not name.strip():
            raise UserError(f"empty language name in '{spec}'; give e.g. en,fr,it,nl or all")
        code = check_language(name)
        if code not in codes:
            codes.append(code)
    return codes


# ----------------------------------------------------------------------------- files

def package_listing(package: str, root: str | Path = "/") -> list[Path] | None:
    """dpkg's file lists of `package` under `root/var/lib/dpkg/info` (`<package>.list`, or
    `<package>:<arch>.list` for multi-arch ones); None when it is not installed."""
    info = Path(root) / "var/lib/dpkg/info"
    lists = sorted(info.glob(f"{package}.list")) + sorted(info.glob(f"{package}:*.list"))
    return lists or None


def package_files(package: str, prefix: str, root: str | Path = "/") -> list[Path]:
    """The regular files (not links) an installed Debian package put below `root/prefix`,
    sorted, from dpkg's file list. A package that is not installed is a `UserError` naming
    it and the command that installs it."""
    lists = package_listing(package, root)
    if lists is None:
        info = Path(root) / "var/lib/dpkg/info"
        raise UserError(f"Debian package {package} is not installed (no {info}/{package}.list); "
                        f"install it as root with `apt-get install {package}` "
                        "(tools/install.sh does)")
    want = "/" + prefix.strip("/") + "/"
    files = set()
    for listing in lists:
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(want):
                path = Path(root) / line.lstrip("/")
                if path.is_file() and not path.is_symlink():
                    files.add(path)
    return sorted(files)


def read_text_file(path: Path) -> str:
    """A text file (gzipped when it ends in .gz) as UTF-8, falling back to Latin-1."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ----------------------------------------------------------------------------- roff

BAD = "\x00"  # marks text that must not end up in a sentence (code, unknown escapes)

_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", ",": "\u0327",
            "~": "\u0303"}
_GLYPHS = {"aq": "'", "cq": "'", "oq": "'", "lq": '"', "rq": '"', "dq": '"', "Fo": "«",
           "Fc": "»", "em": " - ", "en": " - ", "hy": "-", "mi": "-", "ha": BAD, "ti": BAD,
           "rs": BAD, "bu": " ", "co": BAD, "rg": BAD, "tm": BAD, "ss": "ß", "oe": "œ",
           "OE": "Œ", "ae": "æ", "AE": "Æ", "dg": BAD, "pl": BAD, "eq": BAD, "sl": BAD,
           "<-": BAD, "->": BAD, "u2019": "'", "u2018": "'", "u00A0": " "}
_STRINGS = {"lq": '"', "rq": '"', "R": BAD, "Tm": BAD}
_DROPPED = {"\\&", "\\,", "\\/", "\\c", "\\:", "\\%", "\\|", "\\^", "\\)"}
_CHARS = {"-": "-", " ": " ", "~": " ", "0": " ", ".": "."}
_ESCAPE = re.compile(r"\\(?:f(?:\[[^\]]*\]|\(..|.)|s[-+]?\d+|\((..)|\[([^\]]*)\]|\*(?:\((..)|"
                     r"\[([^\]]*)\]|(.))|[nk](?:\(..|\[[^\]]*\]|.)|[hvwlLbDNoXZ]'[^']*'|(.))")


def _glyph(name: str) -> str:
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    return _GLYPHS.get(name, BAD)


def _font_marks(text: str) -> str:
    """Replace font escapes by \x01 (bold/italic on) and \x02 (roman) markers."""
    def mark(match: re.Match) -> str:
        font = match.group(1).strip("[]()")
        return "\x02" if font in ("R", "P", "", "CR") else "\x01"
    return re.sub(r"\\f(\[[^\]]*\]|\(..|.)", mark, text)


def unescape_roff(text: str) -> str:
    """One line of roff text with its escapes resolved (see the module docstring); font
    spans holding anything but words become `BAD`."""
    text = _font_marks(text)

    def replace(match: re.Match) -> str:
        whole = match.group(0)
        if whole.startswith("\\s") or whole in _DROPPED:
            return ""
        if match.group(1) or match.group(2) is not None:
            return _glyph(match.group(1) or match.group(2) or "")
        if match.group(3) or match.group(4) is not None or match.group(5):
            return _STRINGS.get(match.group(3) or match.group(4) or match.group(5), BAD)
        return _CHARS.get(match.group(6) or "", BAD)

    text = _ESCAPE.sub(replace, text)

    text = re.sub(r"\x01([^\x01\x02]*)(?:\x02|$)", lambda m: plain_words(m.group(1)), text)
    return text.replace("\x02", "").replace("\x01", "")


_NOFILL_START = {"nf", "EX", "Vb", "DS", "cs"}
_NOFILL_END = {"fi", "EE", "Ve", "DE"}


def roff_paragraphs(source: str) -> Iterator[str]:
    """The running-text paragraphs of a man page (roff), escapes resolved, one string each:
    every macro line ends a paragraph and is dropped; no-fill blocks are skipped."""
    lines: list[str] = []
    nofill = False
    for raw in source.splitlines():
        if raw.startswith((".", "'")):
            macro = raw[1:].strip().split(maxsplit=1)
            name = macro[0] if macro else ""
            if lines:
                yield " ".join(lines)
                lines = []
            if name in _NOFILL_START:
                nofill = True
            elif name in _NOFILL_END:
                nofill = False
            continue
        if nofill:
            continue
        if not raw.strip():
            if lines:
                yield " ".join(lines)
                lines = []
            continue
        lines.append(unescape_roff(raw))
    if lines:
        yield " ".join(lines)


# ----------------------------------------------------------------------------- HTML

_BLOCK_TAGS = {"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "td", "th", "tr", "table",
               "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "blockquote", "body",
               "section", "article", "header", "footer", "caption", "figure"}
_SKIP_TAGS = {"script", "style", "pre", "head", "title", "svg", "math", "object"}
_CODE_TAGS = {"code", "tt", "kbd", "samp", "var", "screen", "programlisting"}
_CODE_CLASSES = {"command", "filename", "literal", "option", "userinput", "computeroutput",
                 "replaceable", "varname", "envar", "systemitem", "keycap", "guimenu",
                 "prompt", "uri", "email", "ulink", "parameter", "function", "type"}


def plain_words(text: str) -> str:
    """`text` when it holds only words (letters, apostrophes, hyphens, spaces), else `BAD`:
    the rule for a code-font span inside a sentence."""
    words = text.replace("'", "").replace("-", "").replace(" ", "")
    return text if not words or words.isalpha() else BAD


class _HtmlText(HTMLParser):
    """Collects the running-text paragraphs of an HTML page: block elements end a
    paragraph, scripts / styles / <pre> are skipped, code elements pass `plain_words`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._parts: list[str] = []
        self._stack: list[tuple[str, str]] = []   # (tag, kind) of open elements
        self._code: list[str] | None = None

    def _kind(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        classes = set(" ".join(v or "" for k, v in attrs if k == "class").split())
        if tag in _SKIP_TAGS or "toc" in classes or "navheader" in classes \
                or "navfooter" in classes:
            return "skip"
        if tag in _CODE_TAGS or classes & _CODE_CLASSES:
            return "code"
        return "block" if tag in _BLOCK_TAGS else "inline"

    def _flush(self) -> None:
        text = " ".join("".join(self._parts).split())
        if text:
            self.paragraphs.append(text)
        self._parts = []

    def _skipping(self) -> bool:
        return any(kind == "skip" for _, kind in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kind = self._kind(tag, attrs)
        if kind == "block" and not self._skipping():
            self._flush()
        if tag in ("br", "hr", "img", "meta", "link", "input", "wbr"):
            return  # void elements are never closed
        if kind == "code" and self._code is None and not self._skipping():
            self._code = []
        self._stack.append((tag, kind))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, kind = self._stack.pop()
            if kind == "code" and self._code is not None \
                    and not any(k == "code" for _, k in self._stack):
                self._parts.append(plain_words("".join(self._code)))
                self._code = None
            if kind == "block" and not self._skipping():
                self._flush()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._skipping():
            return
        (self._code if self._code is not None else self._parts).append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_paragraphs(source: str) -> list[str]:
    """The running-text paragraphs of an HTML page (see `_HtmlText`)."""
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    return parser.paragraphs


# ----------------------------------------------------------------------------- fortunes

_IT_ACCENT = re.compile(r"(?<!\w)(\w*?)([aeiouAEIOU])'(?![\w])")


def italian_ascii_accents(text: str) -> str:
    """fortunes-it's ASCII accents: "e'" -> "è", "perche'" -> "perché", "citta'" -> "città"
    (a word-final vowel followed by an apostrophe; -ché, né, sé and trentatré take é)."""
    grave = {"a": "à", "e": "è", "i": "ì", "o": "ò", "u": "ù",
             "A": "À", "E": "È", "I": "Ì", "O": "Ò", "U": "Ù"}

    def fix(match: re.Match) -> str:
        stem, vowel = match.group(1), match.group(2)
        if vowel in "eE" and (stem.lower().endswith("ch") or stem.lower() in ("n", "s")
                              or stem.lower().endswith("tr")):
            return stem + ("é" if vowel == "e" else "É")
        return stem + grave[vowel]
    return _IT_ACCENT.sub(fix, text)


def fortune_paragraphs(source: str) -> Iterator[str]:
    """The cookies of a fortune file, one string each, attribution lines dropped."""
    lines: list[str] = []
    for raw in source.splitlines() + ["%"]:
        if raw.strip() == "%":
            if lines:
                yield " ".join(lines)
            lines = []
        elif not re.match(r"^\s*(--|—)", raw) and raw.strip():
            lines.append(raw.strip())


# ----------------------------------------------------------------------------- sentences

_SPLIT = re.compile(r"(?<=[.!?])[\"»)']*\s+")
_SPLIT_CLAUSES = re.compile(r"(?<=[.!?;:])\s+")
_CODE = re.compile(r"[/\\_=<>{}\[\]|@#$%&*+~\d" + BAD + "]")
_INITIAL = re.compile(r"(?:^|\s)\w\.$")  # "M." before the split point
_ABBREVIATION = re.compile(r"\w\.-?\w")  # "b.v.", "m.a.w.", "c.-à-d."
_ACRONYM = re.compile(r"[A-ZÀ-Þ].*[A-ZÀ-Þ]")


def split_sentences(paragraph: str) -> list[str]:
    """A paragraph cut after '.', '!' or '?' followed by a space (closing quotes stay), but
    not after an initial ("Richard M. Stallman")."""
    text = " ".join(paragraph.split())
    sentences, start = [], 0
    for match in _SPLIT.finditer(text):
        if _INITIAL.search(text, 0, match.start()):
            continue
        sentences.append(text[start:match.start()])
        start = match.end()
    sentences.append(text[start:])
    return [s.strip() for s in sentences if s.strip()]


def reads_as(lang: str, words: Sequence[str]) -> bool:
    """Whether normalised `words` read as `lang`: more of its function words than English
    ones, and at least one (always true for English)."""
    if lang == "en":
        return True
    own = sum(w in FUNCTION_WORDS[lang] for w in words)
    english = sum(w in FUNCTION_WORDS["en"] and w not in FUNCTION_WORDS[lang] for w in words)
    return own >= 1 and own > english


def clean_sentence(sentence: str, lang: str, min_words: int = 4, max_words: int = 15,
                   strict: bool = True) -> str | None:
    """The normalised sentence, or None when it fails a check of the module docstring.
    `strict` (man pages, fortunes) adds the capital-start / final-stop, option, acronym and
    language checks; the KJV is clean text and gets only the letter and length checks."""
    sentence = " ".join(sentence.replace("´", "'").split())
    if not sentence or _CODE.search(sentence):
        return None
    if strict:
        core = sentence.lstrip("\"'«“‘(¡¿ ")
        if not core or not core[0].isupper() or sentence.rstrip("\"'»”’) ")[-1:] not in ".!?":
            return None
        tokens = sentence.split()
        for token in tokens:
            if token.startswith("-") or _ACRONYM.search(token.strip(".,;:!?\"'()«»")) \
                    or _ABBREVIATION.search(token) or _INITIAL.search(" " + token):
                return None
        last = re.findall(r"\w+", sentence)[-1:] or [""]
        last = last[0].lower()
        if len(last) < 2 or last in ABBREVIATIONS[lang]:  # "Richard M.", "bijv."
            return None
    text = normalize_text(sentence)
    words = text.split()
    if not min_words <= len(words) <= max_words:
        return None
    if not set(text.replace(" ", "")) <= ALPHABETS[lang]:
        return None
    if strict and not reads_as(lang, words):
        return None
    return text


def source_packages(source: Source, root: str | Path = "/") -> list[str]:
    """The packages a source reads: its required ones and the optional ones installed."""
    return list(source.packages) + [p for p in source.optional
                                    if package_listing(p, root) is not None]


def source_sentences(source: Source, lang: str, min_words: int = 4, max_words: int = 15,
                     root: str | Path = "/", bible_command: str = "bible") -> list[str]:
    """The clean sentences of one source, in file order, duplicates included."""
    if source.kind == "kjv":
        from sprune.lm.corpora import kjv_lines

        pieces = (p for verse in kjv_lines(bible_command) for p in _SPLIT_CLAUSES.split(verse))
        cleaned = (clean_sentence(p, lang, min_words, max_words, strict=False) for p in pieces)
        return [s for s in cleaned if s]
    out: list[str] = []
    paths = sorted({path for package in source_packages(source, root)
                    for path in package_files(package, source.prefix, root)})
    if not paths:
        raise UserError(f"Debian package(s) {', '.join(source.packages)} hold no files under "
                        f"{Path(root) / source.prefix} (damaged?); reinstall them: apt-get "
                        f"install --reinstall {' '.join(source.packages)}")
    for path in paths:
        if source.kind == "fortune" and path.suffix in (".dat", ".u8"):
            continue
        if source.kind == "html" and path.suffix not in (".html", ".htm"):
            continue
        text = read_text_file(path)
        if source.kind == "man":
            paragraphs = roff_paragraphs(text)
        elif source.kind == "html":
            paragraphs = html_paragraphs(text)
        else:
            if lang == "it":
                text = italian_ascii_accents(text)
            paragraphs = fortune_paragraphs(text)
        for paragraph in paragraphs:
            for sentence in split_sentences(paragraph):
                cleaned = clean_sentence(sentence, lang, min_words, max_words)
                if cleaned:
                    out.append(cleaned)
    return out


def language_sentences(lang: str, min_words: int = 4, max_words: int = 15,
                       root: str | Path = "/", bible_command: str = "bible"
                       ) -> tuple[list[str], dict[str, dict]]:
    """(the distinct clean sentences of `lang` from all its sources, sorted; per source name,
    the packages read and the number of new distinct sentences it gave)."""
    lang = check_language(lang)
    seen: set[str] = set()
    report: dict[str, dict] = {}
    for source in SOURCES[lang]:
        before = len(seen)
        seen.update(source_sentences(source, lang, min_words, max_words, root, bible_command))
        report[source.name] = {"packages": source_packages(source, root),
                               "sentences": len(seen) - before}
    return sorted(seen), report


def _count(value: float, n: int, name: str) -> int:
    from sprune.lm.text import _count as count

    return count(value, n, name)


def split_sentences_seeded(sentences: Sequence[str], dev: float, test: float, seed: int = 0,
                           max_sentences: int | None = None) -> dict[str, list[str]]:
    """Shuffle the (distinct) sentences with `seed`, keep the first `max_sentences`, and cut
    them into {"test", "dev", "train"} in that order; dev / test are a fraction below 1 or a
    number of sentences. The three are disjoint."""
    order = sorted(set(sentences))
    random.Random(seed).shuffle(order)
    if max_sentences is not None:
        if max_sentences < 1:
            raise UserError(f"--max-sentences {max_sentences} must be at least 1")
        order = order[:max_sentences]
    n = len(order)
    n_test, n_dev = _count(test, n, "--test"), _count(dev, n, "--dev")
    if n_test + n_dev >= n:
        raise UserError(f"dev ({n_dev}) and test ({n_test}) sentences leave none for training "
                        f"out of {n}; lower --dev / --test")
    return {"test": order[:n_test], "dev": order[n_test:n_test + n_dev],
            "train": order[n_test + n_dev:]}


def _print(message: str) -> None:
    print(message, flush=True)


def build_multilingual_text(out: str | Path, langs: Sequence[str] = LANGUAGES,
                            dev: float = 0.1, test: float = 0.1, seed: int = 0,
                            min_words: int = 4, max_words: int = 15,
                            max_sentences: int | None = None, root: str | Path = "/",
                            bible_command: str = "bible", force: bool = False,
                            log: Log = _print) -> dict[str, dict]:
    """Write `<out>/<lang>/{train,dev,test}.{txt,ids}` and stats.json for each language;
    returns lang -> stats. See the module docstring."""
    from sprune.io import read_json_object
    from sprune.lm.text import STATS_FILE, write_splits

    if min_words < 1 or max_words < min_words:
        raise UserError(f"--min-words {min_words} / --max-words {max_words}: need "
                        "1 <= min <= max")
    codes = [check_language(lang) for lang in langs]
    options = {"dev": dev, "test": test, "seed": seed, "min_words": min_words,
               "max_words": max_words, "max_sentences": max_sentences}
    results: dict[str, dict] = {}
    for lang in codes:
        folder = Path(out) / lang
        stats_path = folder / STATS_FILE
        if stats_path.is_file() and not force:
            stats = read_json_object(stats_path, fix="delete it or pass --force")
            if stats.get("options") == options:
                log(f"{folder}: made before with the same options; nothing to do")
                results[lang] = stats
                continue
        sentences, per_source = language_sentences(lang, min_words, max_words, root,
                                                   bible_command)
        splits = split_sentences_seeded(sentences, dev, test, seed, max_sentences)
        ids, k = {}, 0
        for name in ("train", "dev", "test"):
            ids[name] = [f"{lang}-{k + i:05d}" for i in range(len(splits[name]))]
            k += len(splits[name])
        sources = ", ".join(f"{name} {info['sentences']}" for name, info in per_source.items())
        packages = sorted({p for info in per_source.values() for p in info["packages"]})
        stats = write_splits(folder, splits, source=f"Debian packages {' '.join(packages)}",
                             ids=ids, extra={"lang": lang, "tag": LANGUAGE_TAGS[lang],
                                             "distinct_sentences": len(sentences),
                                             "sources": per_source, "options": options})
        log(f"{folder}: {len(sentences)} distinct sentences ({sources}); train "
            f"{len(splits['train'])}, dev {len(splits['dev'])}, test {len(splits['test'])}")
        results[lang] = stats
    return results
