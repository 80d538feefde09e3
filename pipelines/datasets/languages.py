"""Confirming a record's language (seed 002 section 3.2 step 5): its file extension, then a parse with ast-grep.

A record claims a language (its dataset's `lang` field, or the dataset's `language`); the edited file's extension
(the `path:` tag) must name the same language (a `.tsx` file is TypeScript parsed as TSX), and `pre` and `post` must
both parse in it with tree-sitter (through ast-grep-py) without an ERROR node or a node tree-sitter had to invent
(MISSING, zero-width). A record without a claim takes its extension's language; one with neither is unconfirmed.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from sandbox.languages import EXTENSIONS

SUPPORTED = frozenset(EXTENSIONS)  # the languages whose extensions and grammars are known: python, javascript, typescript, tsx, java
BY_EXTENSION = {extension: language for language, extensions in EXTENSIONS.items() for extension in extensions}
# a claimed language -> the languages its files' extensions may name (TypeScript's .tsx files parse as tsx)
COMPATIBLE = {"typescript": {"typescript", "tsx"}, "tsx": {"tsx", "typescript"}, "javascript": {"javascript"}}


def path_of(tags: list[str]) -> str | None:
    return next((tag[5:] for tag in tags if tag.startswith("path:")), None)


def claimed_language(language: str, tags: list[str]) -> tuple[str | None, str | None]:
    """(the language to parse with, None) when the claim and the extension agree; (None, why) when they do not."""
    path = path_of(tags)
    suffix = PurePosixPath(path).suffix.lower() if path else ""
    by_extension = BY_EXTENSION.get(suffix)
    if not language:
        if by_extension is None:
            return None, "no_language"
        return by_extension, None
    if language not in SUPPORTED:
        return None, "unsupported_language"
    if path is None or by_extension is None and not suffix:
        return language, None  # nothing to compare with: the parse alone decides
    if by_extension is None or by_extension not in COMPATIBLE.get(language, {language}):
        return None, "extension_mismatch"
    return by_extension, None


def has_syntax_error(code: str, language: str) -> bool:
    """Whether tree-sitter (through ast-grep-py) finds an ERROR node, or a MISSING one, parsing `code` as `language`."""
    from ast_grep_py import SgRoot

    root = SgRoot(code, language).root()
    if root.find(kind="ERROR") is not None:
        return True
    stack = list(root.children())
    while stack:
        node = stack.pop()
        children = node.children()
        if not children:
            where = node.range()
            if where.start.index == where.end.index:
                return True  # a token tree-sitter inserted to recover (MISSING)
        stack.extend(children)
    return False


def confirm(language: str, tags: list[str], pre: str, post: str) -> tuple[str | None, str | None]:
    """(confirmed language, None), or (None, the reason it is not confirmed)."""
    parse_as, why = claimed_language(language, tags)
    if parse_as is None:
        return None, why
    if has_syntax_error(pre, parse_as) or has_syntax_error(post, parse_as):
        return None, "parse_error"
    return ("typescript" if parse_as == "tsx" else parse_as), None
