"""`sprune mltext`: en/fr/it/nl sentences from Debian text packages, on a fake file system.

Each test builds a tiny root with dpkg file lists (var/lib/dpkg/info/<pkg>.list) and the
files they name (gzipped man pages, HTML manuals, fortune files, a fake `bible` reader), so
nothing depends on the real Debian packages being installed.
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import shutil
from pathlib import Path

import pytest

from sprune.data import multilingual_text as mt
from sprune.data.multilingual_text import (SOURCES, build_multilingual_text, clean_sentence,
                                           fortune_paragraphs, html_paragraphs,
                                           italian_ascii_accents, package_files,
                                           roff_paragraphs, split_sentences)
from sprune.errors import UserError

MAN_PAGE = r""".\" -*- coding: UTF-8 -*-
.TH LS 1 "2022" "GNU coreutils" "Commandes"
.SH NOM
ls \- afficher le contenu d'un répertoire
.SH DESCRIPTION
Le programme affiche la liste des fichiers du répertoire courant. Il trie les entrées
par ordre alphabétique si l'option \fB\-\-sort\fP n'est pas donnée.
.PP
La commande \fBls\fP lit le répertoire et ses fichiers cachés. Elle s'arrête à la fin.
.TP
\fB\-a\fP, \fB\-\-all\fP
ne pas ignorer les entrées commençant par un point
.PP
This paragraph was left in English by the translators of the page.
Les fichiers sont triés selon la valeur de \fBLC_ALL\fP pour la locale.
Le fichier est lu par l'utilisateur dans le r\('epertoire courant.
.nf
Le texte d'un exemple ne compte pas comme une phrase.
.fi
Le système GNU affiche le fichier. Le fichier contient deux lignes de texte.
Le résultat est écrit dans le fichier de sortie, p.\& ex.
Voir la page de Richard M. Stallman pour les détails.
"""

MAN_SENTENCES = {
    "le programme affiche la liste des fichiers du répertoire courant",
    "la commande ls lit le répertoire et ses fichiers cachés", "elle s'arrête à la fin",
    "le fichier contient deux lignes de texte",
    "le fichier est lu par l'utilisateur dans le répertoire courant",
}

HTML_PAGE = """<html><head><title>Le titre du manuel entier</title></head><body>
<div class="navheader"><a href="x">Le lien vers la page suivante du manuel</a></div>
<div class="toc"><p>La table des matières ne compte pas du tout.</p></div>
<h1>Chapitre premier</h1>
<p>Le gestionnaire de paquets installe les logiciels sur le système.
Pour chercher un paquet, utilisez la commande <code class="literal">apt search</code>
dans le terminal.</p>
<p>Il faut lancer <span class="command"><strong>aptitude</strong></span> avec les droits
de l'administrateur.</p>
<pre>Le texte préformaté ne compte pas non plus.</pre>
<ul><li>La liste des paquets est mise à jour chaque jour.</li></ul>
<p>Le fichier <code>/etc/apt/sources.list</code> donne la liste des dépôts.</p>
</body></html>"""

HTML_SENTENCES = {
    "le gestionnaire de paquets installe les logiciels sur le système",
    "pour chercher un paquet utilisez la commande apt search dans le terminal",
    "il faut lancer aptitude avec les droits de l'administrateur",
    "la liste des paquets est mise à jour chaque jour",
}

FORTUNES = """Il cervello e' un organo favoloso. Comincia a lavorare quando ti svegli la mattina.
\t\t-- Robert Frost
%
"Perche' non vieni con me in citta'?"
"Perche' e' tardi e piove molto."
%
Questa frase con il numero 42 non conta.
%
"""


def write_package(root: Path, package: str, files: dict[str, str | bytes]) -> None:
    """Install a fake Debian package under `root`: its files and dpkg's list of them."""
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    listed = set()
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
        parts = Path(name.lstrip("/")).parts
        listed.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    (info / f"{package}.list").write_text("/.\n" + "".join(f"{p}\n" for p in sorted(listed)))


def french_sentences(n: int, offset: int = 0) -> list[str]:
    """`n` distinct French sentences (6-7 words) that pass every check."""
    subjects = ["Le programme", "La commande", "Le serveur", "Le système", "Le paquet"]
    verbs = ["lit", "écrit", "copie", "efface", "affiche", "garde"]
    objects = ["le fichier", "la liste", "les données", "le journal", "la page", "les noms"]
    places = ["du disque.", "de la machine.", "du réseau."]
    combos = list(itertools.product(subjects, verbs, objects, places))[offset:offset + n]
    assert len(combos) == n
    return [" ".join(c) for c in combos]


def install_french(root: Path, n_man: int = 40) -> None:
    """Every package the French sources need, with `n_man` + a few distinct sentences."""
    page = ".TH T 1\n.SH DESCRIPTION\n" + "\n.PP\n".join(french_sentences(n_man)) + "\n"
    write_package(root, "manpages-fr", {"/usr/share/man/fr/man1/t.1.gz": page,
                                        "/usr/share/man/fr/man1/ls.1.gz": MAN_PAGE})
    write_package(root, "manpages-fr-dev", {"/usr/share/man/fr/man2/u.2.gz": page})  # repeats
    write_package(root, "installation-guide-amd64", {
        "/usr/share/doc/installation-guide-amd64/fr/ch01.html": HTML_PAGE,
        "/usr/share/doc/installation-guide-amd64/fr/style.css": "p { color: red }",
        "/usr/share/doc/installation-guide-amd64/nl/ch01.html": "<p>Dit is Nederlands.</p>"})
    write_package(root, "aptitude-doc-fr", {
        "/usr/share/doc/aptitude/html/fr/index.html":
            "<p>" + " ".join(french_sentences(5, offset=n_man)) + "</p>"})
    write_package(root, "debian-faq-fr", {
        "/usr/share/doc/debian/FAQ/fr/faq.html": "<p>La foire aux questions répond aux gens.</p>"})
    # A page of another package in the same folder: not one of the sources, never read.
    write_package(root, "other", {"/usr/share/man/fr/man1/z.1.gz":
                                  ".PP\nLe paquet étranger ne compte pas du tout ici.\n"})


def read_split(folder: Path, name: str) -> list[str]:
    return (folder / f"{name}.txt").read_text(encoding="utf-8").splitlines()


# --- cleaning --------------------------------------------------------------------------------

def test_man_page_keeps_prose_and_drops_options_code_english_and_examples(tmp_path):
    write_package(tmp_path, "p", {"/usr/share/man/fr/man1/ls.1.gz": MAN_PAGE})
    [path] = package_files("p", "usr/share/man/fr", tmp_path)
    kept = {clean_sentence(s, "fr") for para in roff_paragraphs(mt.read_text_file(path))
            for s in split_sentences(para)} - {None}
    assert kept == MAN_SENTENCES


def test_html_keeps_block_text_and_skips_toc_navigation_pre_and_code():
    kept = {clean_sentence(s, "fr") for para in html_paragraphs(HTML_PAGE)
            for s in split_sentences(para)} - {None}
    assert kept == HTML_SENTENCES


def test_fortunes_drop_attributions_and_fix_italian_ascii_accents():
    cookies = list(fortune_paragraphs(italian_ascii_accents(FORTUNES)))
    assert cookies[0] == ("Il cervello è un organo favoloso. Comincia a lavorare quando ti "
                          "svegli la mattina.")
    kept = {clean_sentence(s, "it") for c in cookies for s in split_sentences(c)} - {None}
    assert kept == {"il cervello è un organo favoloso",
                    "comincia a lavorare quando ti svegli la mattina",
                    "perché non vieni con me in città", "perché è tardi e piove molto"}
    assert italian_ascii_accents("c'e' ne' lui ne' dell'anno trentatre'") == \
        "c'è né lui né dell'anno trentatré"


@pytest.mark.parametrize("lang, sentence, expected", [
    ("fr", "Le fichier « essai » est lu, puis fermé !", "le fichier essai est lu puis fermé"),
    ("fr", "L’utilisateur lit l´écran du terminal.", "l'utilisateur lit l'écran du terminal"),
    ("nl", "Het bestand wordt door de gebruiker gelezen.",
     "het bestand wordt door de gebruiker gelezen"),
    ("fr", "Le fichier contient 3 lignes de texte.", None),          # digit
    ("fr", "Le fichier est lu par la commande ls.", "le fichier est lu par la commande ls"),
    ("fr", "Utilisez -v pour le mode verbeux du programme.", None),  # option
    ("fr", "Le fichier FICHIER est lu par le programme.", None),     # placeholder / acronym
    ("fr", "Le fichier est lu par le programme, etc.", None),        # ends on an abbreviation
    ("nl", "Zie de bestanden in de map, bijv.", None),
    ("fr", "Le fichier est lu, c.-à-d. ouvert par le programme.", None),
    ("fr", "le fichier est lu par le programme.", None),              # no capital
    ("fr", "Le fichier est lu par le programme", None),               # no final stop
    ("fr", "The file is read by the program.", None),                 # English
    ("fr", "Le fichier est lu.", "le fichier est lu"),                # 4 words: kept
    ("fr", "Le fichier lu.", None),                                    # 3 words: too short
    ("it", "Il file è letto dal programma ß.", None),                  # letter of no alphabet
    ("fr", "Le " + "très " * 14 + "long fichier.", None),              # 17 words
])
def test_clean_sentence(lang, sentence, expected):
    assert clean_sentence(sentence, lang) == expected


def test_kjv_is_split_into_clauses_and_lowercased(tmp_path):
    bible = tmp_path / "bible"
    bible.write_text("#!/bin/sh\ncat <<'EOF'\n"
                     "Ge1:1 In the beginning God created the heaven and the earth.\n"
                     "Ge1:3 And God said, Let there be light: and there was light.\n"
                     "Ge1:5 And God called the light Day, and the darkness he called Night. "
                     "And the evening and the morning were the first day.\n"
                     "EOF\n")
    bible.chmod(0o755)
    [source] = SOURCES["en"]
    assert mt.source_sentences(source, "en", bible_command=str(bible)) == [
        "in the beginning god created the heaven and the earth",
        "and god said let there be light", "and there was light",
        "and god called the light day and the darkness he called night",
        "and the evening and the morning were the first day"]


# --- building the splits -------------------------------------------------------------------

def test_build_writes_disjoint_deterministic_splits_from_the_packages_only(tmp_path):
    root = tmp_path / "root"
    install_french(root)
    out = tmp_path / "text"
    stats = build_multilingual_text(out, ["fr"], dev=5, test=0.1, seed=3, root=root,
                                    log=lambda m: None)["fr"]
    folder = out / "fr"
    splits = {name: read_split(folder, name) for name in ("train", "dev", "test")}
    everything = ({s.lower().rstrip(".") for s in french_sentences(45)} | MAN_SENTENCES
                  | HTML_SENTENCES | {"la foire aux questions répond aux gens"})
    assert sum(map(len, splits.values())) == len(everything) == stats["distinct_sentences"]
    assert set().union(*splits.values()) == everything          # no "other" page, no Dutch
    assert len(splits["dev"]) == 5 and len(splits["test"]) == round(0.1 * len(everything))
    for a, b in itertools.combinations(splits.values(), 2):
        assert not set(a) & set(b)
    ids = [i for name in splits for i in (folder / f"{name}.ids").read_text().split()]
    assert len(set(ids)) == len(ids) == len(everything) and all(i.startswith("fr-") for i in ids)
    assert stats["tag"] == "fr-FR" and stats["options"]["seed"] == 3
    assert stats["sources"]["man pages"]["packages"][:2] == ["manpages-fr", "manpages-fr-dev"]
    assert sum(s["sentences"] for s in stats["sources"].values()) == len(everything)

    def digest(path: Path) -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.glob("*.txt")))
                              ).hexdigest()

    first = digest(folder)
    again = tmp_path / "again"
    build_multilingual_text(again, ["fr"], dev=5, test=0.1, seed=3, root=root,
                            log=lambda m: None)
    assert digest(again / "fr") == first                        # same seed: same bytes
    build_multilingual_text(again, ["fr"], dev=5, test=0.1, seed=4, root=root,
                            log=lambda m: None)
    assert digest(again / "fr") != first                        # another seed: another order
    assert set(read_split(again / "fr", "train")) | set(read_split(again / "fr", "dev")) | \
        set(read_split(again / "fr", "test")) == everything


def test_rerun_with_same_options_is_skipped_and_max_sentences_limits(tmp_path, cli):
    root = tmp_path / "root"
    install_french(root)
    args = ("mltext", "--langs", "fr", "--out", tmp_path / "t", "--root", root,
            "--dev", "4", "--test", "4", "--max-sentences", "20")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert sum(len(read_split(tmp_path / "t/fr", s)) for s in ("train", "dev", "test")) == 20
    mtime = (tmp_path / "t/fr/stats.json").stat().st_mtime_ns
    second = cli(*args)
    assert "nothing to do" in second.stdout
    assert (tmp_path / "t/fr/stats.json").stat().st_mtime_ns == mtime
    assert json.loads((tmp_path / "t/fr/stats.json").read_text())["train"]["lines"] == 12


def test_packages_lists_what_apt_get_needs(cli):
    proc = cli("mltext", "--packages", "--langs", "it,nl")
    assert proc.returncode == 0
    assert proc.stdout.split() == ["fortunes-it", "manpages-it", "manpages-it-dev",
                                   "installation-guide-amd64", "aptitude-doc-it",
                                   "debian-faq-it", "manpages-nl", "manpages-nl-dev",
                                   "aptitude-doc-nl", "debian-faq-nl"]


# --- bad input: one line, exit 2 -------------------------------------------------------------

@pytest.mark.parametrize("setup, argv, words", [
    ("none", ["--langs", "nl"], "Debian package manpages-nl is not installed"),
    ("fr", ["--langs", "fr", "--dev", "0.6", "--test", "0.5"], "leave none for training"),
    ("fr", ["--langs", "fr", "--dev", "2.5"], "must be a fraction"),
    ("fr", ["--langs", "fr", "--min-words", "9", "--max-words", "3"], "1 <= min <= max"),
    ("fr", ["--langs", "fr", "--max-sentences", "0"], "must be at least 1"),
    ("none", ["--langs", "de"], "no sentence source for language 'de'"),
    ("none", ["--langs", "fr,,nl"], "empty language name"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli, setup, argv, words):
    root = tmp_path / "root"
    root.mkdir()
    if setup == "fr":
        install_french(root)
    proc = cli("mltext", "--out", tmp_path / "t", "--root", root, *argv)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t" / "fr" / "stats.json").exists()


def test_missing_package_names_the_apt_get_command(tmp_path):
    install_french(tmp_path)
    (tmp_path / "var/lib/dpkg/info/debian-faq-fr.list").unlink()
    with pytest.raises(UserError, match=r"apt-get install debian-faq-fr"):
        mt.language_sentences("fr", root=tmp_path)


def test_the_four_languages_have_espeak_voices_and_tags():
    from sprune.data.phrases import resolve_language
    from sprune.data.speak import resolve_voice

    voices = {code: resolve_voice(code, None) for code in mt.LANGUAGES}
    assert voices == {"en": ("en-US", "en-us"), "fr": ("fr-FR", "fr"), "it": ("it-IT", "it"),
                      "nl": ("nl-NL", "nl")}
    assert all(resolve_language(code) == tag for code, tag in mt.LANGUAGE_TAGS.items())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speaks_a_sentence_of_each_language():
    from sprune.data.espeak import Voice, synthesize
    from sprune.data.speak import resolve_voice

    for code, sentence in (("fr", "le fichier est lu"), ("it", "il cervello è un organo"),
                           ("nl", "het bestand wordt gelezen")):
        samples, rate = synthesize(sentence, Voice(resolve_voice(code, None)[1]))
        assert rate > 0 and len(samples) > rate // 4
