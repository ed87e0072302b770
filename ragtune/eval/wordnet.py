"""WordNet 3.0 for METEOR's synonym stage, from Debian's packages (no nltk download needed).

nltk's METEOR matches synonyms through its WordNet reader, whose data nltk fetches from the
internet (``nltk.download("wordnet")``); PyPI has no package of it. Debian ships the same
Princeton WordNet 3.0 database as ``wordnet-base`` (data, index and exception files) and
``wordnet-sense-index`` (``index.sense``, which nltk's reader opens when it loads).
:func:`install` fetches both with ``apt-get download`` (no root), unpacks them with
``dpkg-deb -x`` and lays the files out as nltk expects them under ``DEST/corpora/wordnet``, plus
``lexnames`` (the 45 lexicographer file names, which Debian ships only as the table of the
``lexnames(5WN)`` manual page: it is read from there). The default ``DEST`` is the
environment's own ``nltk_data`` (``sys.prefix/nltk_data``), a folder nltk searches.

    ragtune eval wordnet [--dest DIR] [--deb FILE ...]

The files are assembled in a temporary folder beside the target and moved into place in one
rename, then loaded with nltk's reader; a copy that fails that check is removed again, so an
interrupted or failed install leaves nothing half-written. ``make install`` runs it; where
``apt-get`` is missing (not a Debian-family system) METEOR runs its exact and stem stages only and
says so (``meteor_stages``).
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ragtune.errors import UserError

PACKAGES = ("wordnet-base", "wordnet-sense-index")
# What nltk's WordNetCorpusReader opens: the four parts of speech' data and index files, their
# exception lists, the sense index, the sense counts, and lexnames (written by this module).
REQUIRED = (
    tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv"))
    + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
    + ("index.sense", "cntlist.rev")
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LEXNAME = re.compile(r"^(\d\d)\t\s*((noun|verb|adj|adv)\.\w+)\s*\t")


def default_dest() -> Path:
    """The environment's ``nltk_data`` folder (on nltk's search path)."""
    return Path(sys.prefix) / "nltk_data"


def lexnames_from_manpage(text: str) -> str:
    """The ``lexnames`` file (``NN<TAB>name<TAB>category``, one line per lexicographer file, in
    number order) from the table of the ``lexnames(5WN)`` manual page's source."""
    rows = []
    for line in text.splitlines():
        m = _LEXNAME.match(line)
        if m:
            rows.append((int(m.group(1)), m.group(2), _CATEGORY[m.group(3)]))
    if not rows or [n for n, _, _ in rows] != list(range(len(rows))):
        raise UserError("the lexnames(5WN) manual page holds no table numbered 00, 01, ...")
    return "".join(f"{n:02d}\t{name}\t{cat}\n" for n, name, cat in rows)


def installed(dest: Path | None = None) -> bool:
    """Whether ``dest`` (default: :func:`default_dest`) holds a complete WordNet for nltk."""
    folder = (dest or default_dest()) / "corpora" / "wordnet"
    return all((folder / f).is_file() for f in (*REQUIRED, "lexnames"))


def _run(cmd: Sequence[str], cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        raise UserError(
            f"`{cmd[0]}` not found: WordNet is installed from Debian's {' and '.join(PACKAGES)} "
            "packages (a Debian-family system), or by nltk.download('wordnet') where the internet is "
            "reachable; without it METEOR matches exact words and stems only"
        )
    try:
        done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(cmd)}` did not finish in 10 minutes") from None
    if done.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def install(dest: Path | None = None, debs: Sequence[Path] = ()) -> Path:
    """Install WordNet for nltk under ``dest/corpora/wordnet`` from the Debian packages ``debs``
    (downloaded with ``apt-get download`` when none are given); returns the folder. Does nothing
    when it is already complete."""
    dest = dest or default_dest()
    target = dest / "corpora" / "wordnet"
    if installed(dest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".wordnet-") as tmp:
        work = Path(tmp)
        if not debs:
            _run(["apt-get", "download", *PACKAGES], work)
            debs = sorted(work.glob("*.deb"))
        root = work / "root"
        for deb in debs:
            _run(["dpkg-deb", "-x", str(Path(deb).resolve()), str(root)], work)
        src = root / "usr/share/wordnet"
        missing = [f for f in REQUIRED if not (src / f).is_file()]
        if missing:
            raise UserError(f"the packages {[Path(d).name for d in debs]} lack {', '.join(missing)}")
        man = root / "usr/share/man/man5/lexnames.5WN.gz"
        if not man.is_file():
            raise UserError(f"the packages {[Path(d).name for d in debs]} lack the lexnames(5WN) page")
        stage = work / "wordnet"
        shutil.copytree(src, stage)
        with gzip.open(man, "rt") as page:
            (stage / "lexnames").write_text(lexnames_from_manpage(page.read()))
        if target.exists():  # an incomplete earlier copy
            shutil.rmtree(target)
        stage.rename(target)
    try:
        _check(dest, target)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)  # nothing half-working stays behind
        raise
    return target


def _check(dest: Path, folder: Path) -> None:
    """Load ``folder`` with nltk's reader and look a word up (fails loudly on a broken copy). nltk
    reads only below its search path, and its reader finds its own sense index there by name."""
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if str(dest) not in nltk.data.path:
        nltk.data.path.insert(0, str(dest))
    with warnings.catch_warnings():  # "multilingual functions are not available": not used here
        warnings.simplefilter("ignore", UserWarning)
        reader = WordNetCorpusReader(str(folder), None)
    if reader.get_version() != "3.0" or "automobile" not in reader.synset("car.n.01").lemma_names():
        raise UserError(f"{folder}: not a working WordNet 3.0")
