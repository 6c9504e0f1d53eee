"""Core ML's errors as one readable line, and the project's error for a Core ML step that failed.

coremltools' native layer raises `RuntimeError` whose text is the `NSError`'s userInfo
dictionary as Foundation prints it (`{\\n    NSLocalizedDescription = "...";\\n ...}`): the first
line of such a message is `{`. The readable part is the localized description.
"""

from __future__ import annotations

import re

from sortformer_build.errors import BuildError

# A Foundation dictionary entry: the value quoted with backslash escapes, or a bare word.
_DESCRIPTION = re.compile(r'NSLocalizedDescription\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))\s*;', re.DOTALL)
_ESCAPE = re.compile(r"\\(U[0-9A-Fa-f]{4}|.)", re.DOTALL)
_ESCAPED = {"n": "\n", "t": "\t", "r": "\r"}


class CoreMLError(BuildError):
    """A compile, load or prediction that Core ML refused, or a process it killed."""


def readable(error: BaseException | str) -> str:
    """One line: the NSError's localized description when the text carries one, else the whole
    text joined onto one line; the exception's type when it says nothing."""
    text = error if isinstance(error, str) else str(error)
    match = _DESCRIPTION.search(text)
    if match is not None:
        quoted, bare = match.groups()
        text = _unescape(quoted) if quoted is not None else bare
    line = " ".join(text.split())
    if line:
        return line
    return "" if isinstance(error, str) else type(error).__name__


def _unescape(quoted: str) -> str:
    def one(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if escaped.startswith("U") and len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return _ESCAPED.get(escaped, escaped)

    return _ESCAPE.sub(one, quoted)
