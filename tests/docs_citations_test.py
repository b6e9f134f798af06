"""Citations of the docs resolve, and nothing cites notes outside the repo.

Code and docs cite the documentation as `docs/<name>.md §N`, `§N-M`
(a range) or `§N, §M` (a list), or name a page alone (`docs/<name>.md`).
Every cited page must exist in `docs/`, and every cited section must have
a Markdown heading (a line starting with `#`) that contains `§N`.

The scan covers the files git tracks (`git ls-files`), text only.
"""

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
THIS_FILE = pathlib.Path(__file__).resolve().relative_to(REPO).as_posix()

# One section number, or a range `N-M` (hyphen or en dash).
_SECTION = r"§\s*\d+(?:\s*[-–]\s*§?\s*\d+)?"
# `docs/<name>.md`, an optional closing quote or backtick, then an optional
# list of sections joined by commas or "and". Not part of a longer path.
CITATION = re.compile(
    r"(?<![\w/.-])docs/(?P<name>[\w.-]+?\.md)[`'\"]?"
    rf"(?P<sections>\s*{_SECTION}(?:\s*(?:,|and)\s*{_SECTION})*)?"
)
_NUMBERS = re.compile(r"(\d+)(?:\s*[-–]\s*§?\s*(\d+))?")

# Private notes that live outside the repository; built by concatenation
# so that this file does not match itself.
FORBIDDEN = ("SNAS" + ".md", "STACK" + "-NOTES")


def parse_citations(text):
    """Citations in `text` as (page name, section or None) pairs.

    A range `§N-M` gives every section from N to M; a page named without
    a section gives one pair with section None.
    """
    found = []
    for match in CITATION.finditer(text):
        name, sections = match.group("name"), match.group("sections")
        if not sections:
            found.append((name, None))
            continue
        for first, last in _NUMBERS.findall(sections):
            stop = int(last) if last else int(first)
            found.extend((name, n) for n in range(int(first), stop + 1))
    return found


def tracked_text_files():
    """(repo-relative path, text) of every tracked text file."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listing.split("\0")):
        path = REPO / rel
        if not path.is_file():  # deleted or moved in the working tree
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            yield rel, data.decode("utf-8")
        except UnicodeDecodeError:
            continue


def section_headings(page):
    """Section numbers that have a heading in docs/`page`."""
    numbers = set()
    for line in (REPO / "docs" / page).read_text().splitlines():
        if line.startswith("#"):
            numbers.update(int(n) for n in re.findall(r"§\s*(\d+)", line))
    return numbers


def bad_citations(files):
    """`path:line: citation` for every citation that does not resolve."""
    headings = {}
    bad = []
    for rel, text in files:
        if rel == THIS_FILE:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for name, section in parse_citations(line):
                if name not in headings:
                    page = REPO / "docs" / name
                    headings[name] = (
                        section_headings(name) if page.is_file() else None
                    )
                if headings[name] is None:
                    bad.append(f"{rel}:{number}: docs/{name} (no such page)")
                elif section is not None and section not in headings[name]:
                    bad.append(f"{rel}:{number}: docs/{name} §{section}")
    return bad


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "see docs/method.md §2 and docs/x.md §3-4",
            [("method.md", 2), ("x.md", 3), ("x.md", 4)],
        ),
        ("(docs/method.md §2-4)", [("method.md", n) for n in (2, 3, 4)]),
        (
            "docs/tensorflow-notes.md §1, §10 and §11",
            [("tensorflow-notes.md", n) for n in (1, 10, 11)],
        ),
        ("`docs/method.md` §5.", [("method.md", 5)]),
        ("docs/method.md §5–6", [("method.md", 5), ("method.md", 6)]),
        ("See docs/decisions.md.", [("decisions.md", None)]),
        ("[x](docs/decisions.md) §", [("decisions.md", None)]),
        ("tests/docs/method.md §1 and benchmarks/README.md", []),
        ("method.md §1", []),
    ],
)
def test_parse_citations(text, expected):
    assert parse_citations(text) == expected


def test_bad_citations_are_reported():
    files = [
        ("a.py", "x\n# docs/method.md §1 and docs/method.md §99\n"),
        ("b.md", "docs/no-such-page.md §1"),
    ]
    assert bad_citations(files) == [
        "a.py:2: docs/method.md §99",
        "b.md:1: docs/no-such-page.md (no such page)",
    ]


def test_cited_docs_and_sections_exist():
    bad = bad_citations(tracked_text_files())
    assert not bad, "Citations that do not resolve:\n" + "\n".join(bad)


def test_no_file_cites_notes_outside_the_repo():
    bad = [
        f"{rel}:{number}: {line.strip()}"
        for rel, text in tracked_text_files()
        if rel != THIS_FILE
        for number, line in enumerate(text.splitlines(), 1)
        if any(word in line for word in FORBIDDEN)
    ]
    assert not bad, (
        f"{len(bad)} lines cite notes that are not in the repository; "
        "cite docs/method.md or docs/tensorflow-notes.md instead:\n"
        + "\n".join(bad)
    )
