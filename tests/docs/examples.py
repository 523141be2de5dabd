"""The docs' examples, read from the Markdown: the blocks marked `<!-- example -->` (a request and, in the
next fenced block, its answer) and every `gru ...` command line of a bash block."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARK = "<!-- example -->"
# What a tiny test model answers differently from the model the docs were written with.
FREE_KEYS = {"label", "request_id"}
FREE_LISTS = {"steps"}  # a tagging model's label per step


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    code: str
    answer: str | None  # the fenced block right after the code, when it is JSON

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(text: str) -> list[tuple[int, int, str, str]]:
    """(start offset, end offset, language, body) of every fenced block."""
    return [(m.start(), m.end(), m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def marked_examples() -> list[Example]:
    found = []
    for page in PAGES:
        text = page.read_text()
        fenced = blocks(text)
        for mark in re.finditer(re.escape(MARK), text):
            index = next(i for i, (start, *_rest) in enumerate(fenced) if start > mark.end())
            start, end, language, code = fenced[index]
            assert text[mark.end():start].strip() == "", f"{page.name}: {MARK} must stand right above a block"
            answer = None
            if index + 1 < len(fenced):
                next_start, _, next_language, body = fenced[index + 1]
                if next_language == "json" and text[end:next_start].strip() == "":
                    answer = body
            found.append(Example(str(page.relative_to(ROOT)), text.count("\n", 0, start) + 1, language, code,
                                 answer))
    return found


def command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv after `gru`) for every `gru ...` or `-m gru_cli ...` command in a bash block."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for start, _, language, body in blocks(text):
            if language not in ("bash", "sh"):
                continue
            for number, line in enumerate(body.replace("\\\n", " ").splitlines()):
                for words in shell_commands(line):
                    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value gru ...
                        words = words[1:]
                    if words[:1] == ["gru"]:
                        argv = words[1:]
                    elif "gru_cli" in words and words[words.index("gru_cli") - 1] == "-m":
                        argv = words[words.index("gru_cli") + 1:]
                    else:
                        continue
                    if "--help" not in argv:
                        where = f"{page.relative_to(ROOT)}:{text.count(chr(10), 0, start) + 2 + number}"
                        found.append((where, argv))
    return found


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of one shell line (split at ;, &&, ||, |, parentheses); none when the line
    is part of a multi-line string."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    commands: list[list[str]] = [[]]
    for token in tokens:
        if set(token) <= set(";&|()"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def documented_scripts() -> list[tuple[str, str, list[str]]]:
    """(page, script file, its --flags) of every `python -m bench.x ...` / `python scripts/x.py ...` in
    the docs, in code blocks or inline code."""
    found = []
    pattern = re.compile(r"python -m (bench|scripts)\.(\w+)([^`#\n]*)"
                         r"|python ((?:bench|scripts)/\w+\.py)([^`#\n]*)")
    for page in PAGES:
        for match in pattern.finditer(page.read_text()):
            path = f"{match[1]}/{match[2]}.py" if match[1] else match[4]
            flags = re.findall(r"(--[a-z][a-z-]*)", match[3] or match[5] or "")
            found.append((str(page.relative_to(ROOT)), path, flags))
    return found


def json_documents(text: str) -> list[Any]:
    """Every JSON document in `text`, in order (one per line, or pretty-printed, or concatenated)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (position := _skip_space(text, position)) < len(text):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def mismatches(expected: Any, actual: Any, path: str = "$", key: str = "") -> list[str]:
    """How `actual` differs from the documented answer: the same keys and list lengths everywhere, the
    same strings, integers and booleans; floats (probabilities, forecasts) by type; a string written
    with "..." by its start; FREE_KEYS and FREE_LISTS by type."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or expected.keys() != actual.keys():
            return [f"{path}: keys {sorted(actual) if isinstance(actual, dict) else actual!r}, "
                    f"documented {sorted(expected)}"]
        return [m for k in expected for m in mismatches(expected[k], actual[k], f"{path}.{k}", k)]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {actual!r} has another length than the documented {expected!r}"]
        return [m for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for m in mismatches(e, a, f"{path}[{i}]", key if key in FREE_LISTS else "")]
    if isinstance(expected, str):
        if key in FREE_KEYS or key in FREE_LISTS:
            ok = isinstance(actual, str)
        elif "..." in expected:
            ok = isinstance(actual, str) and actual.startswith(expected.split("...")[0])
        else:
            ok = actual == expected
        return [] if ok else [f"{path}: {actual!r}, documented {expected!r}"]
    if isinstance(expected, float):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        return [] if ok else [f"{path}: {actual!r} is not a number"]
    return [] if actual == expected and type(actual) is type(expected) else [
        f"{path}: {actual!r}, documented {expected!r}"]


TREE_PATH = re.compile(r"(?<![\w./-])((?:training|export|service|bench|scripts|tests|deploy|configs|examples)"
                       r"/[\w./-]*[\w/])")


def repository_paths() -> list[tuple[str, str]]:
    """(page, path) of every file or folder of the repository the docs name in inline code, e.g.
    `service/batching.py` or `tests/e2e/`; generated outputs (bench/results/) are not in the tree."""
    found = []
    for page in PAGES:
        for code in re.findall(r"`([^`\n]+)`", page.read_text()):
            for path in TREE_PATH.findall(code):
                if not path.startswith("bench/results"):
                    found.append((str(page.relative_to(ROOT)), path))
    return sorted(set(found))
