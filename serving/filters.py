"""The search request's `filter` parameter: a small boolean language over the store's scalar fields.

    split == "test" and duration >= 30 and not (modalities in ["v", "a"] or source != 'msrvtt')

The text is tokenized and parsed here (nothing is evaluated) and only a parse that succeeds reaches Milvus,
re-rendered from the parse tree, so what Milvus sees is exactly this grammar:

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | comparison
    comparison := FIELD ("==" | "!=" | "<" | "<=" | ">" | ">=") LITERAL
                | FIELD "in" "[" LITERAL ("," LITERAL)* "]"

FIELD is one of FIELDS (the store's scalar fields a client may see; not content_hash, media_uri or the
embedding); a string field takes string literals ("..." or '...', escapes \\" \\' \\\\ only) and a number
field number literals (ingest_time integers). Keywords are lower case. Anything else (function calls,
JSON paths, `&&`, `like`, other names, control or format characters, a non-ASCII name) is refused with
the token and its position (0-based character offset). The text is at most MAX_LENGTH characters, an
`in` list at most MAX_IN values, parentheses and `not` nest at most MAX_DEPTH deep.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass

from model.errors import OmniRetrieverError

MAX_LENGTH = 2048  # characters of a filter
MAX_IN = 1000  # values of one `in [...]` list
MAX_DEPTH = 32  # nesting of parentheses and `not`
STRING, NUMBER, INTEGER = "string", "number", "integer"
FIELDS = {"split": STRING, "source": STRING, "modalities": STRING, "item_id": STRING,
          "duration": NUMBER, "start": NUMBER, "end": NUMBER, "ingest_time": INTEGER}
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = ("and", "or", "not", "in")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"-?\d+")
_SPACE = " \t\r\n"
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")  # control, format (bidi, zero-width), unassigned


class FilterError(OmniRetrieverError, ValueError):
    """A filter outside the grammar, naming the token (or field) and its position."""


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "keyword", "op", "string", "number", "(", ")", "[", "]", ",", "end"
    text: str  # as written (a string: its value, unquoted)
    pos: int


def _string(text: str, pos: int) -> tuple[str, int]:
    """The string literal opening at text[pos]: (its value, the position after its closing quote)."""
    quote, out, i = text[pos], [], pos + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\"'\\":
                raise FilterError(f"escape {text[i:i + 2]!r} at position {i}: only \\\" \\' and \\\\ are allowed")
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise FilterError(f"string opened at position {pos} is not closed")


def tokenize(text: str) -> list[Token]:
    """The tokens of `text`, ending with an "end" token; FilterError at the first character outside them."""
    tokens, i = [], 0
    while i < len(text):
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c in "()[],":
            tokens.append(Token(c, c, i))
            i += 1
        elif c in "\"'":
            value, end = _string(text, i)
            tokens.append(Token("string", value, i))
            i = end
        elif op := next((o for o in COMPARISONS if text.startswith(o, i)), None):
            tokens.append(Token("op", op, i))
            i += len(op)
        elif m := _NUMBER.match(text, i):
            tokens.append(Token("number", m.group(), i))
            i = m.end()
        elif m := _NAME.match(text, i):
            word = m.group()
            tokens.append(Token("keyword" if word in KEYWORDS else "name", word, i))
            i = m.end()
        else:
            raise FilterError(f"unexpected character {c!r} (U+{ord(c):04X}) at position {i}")
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None, what: str = "") -> Token:
        tok = self.peek()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise FilterError(f"expected {what or text or kind} at position {tok.pos}, got {_shown(tok)}")
        self.i += 1
        return tok

    def at(self, kind: str, text: str) -> bool:
        tok = self.peek()
        return tok.kind == kind and tok.text == text

    def expr(self) -> str:
        parts = [self.and_expr()]
        while self.at("keyword", "or"):
            self.i += 1
            parts.append(self.and_expr())
        return " or ".join(parts)

    def and_expr(self) -> str:
        parts = [self.unary()]
        while self.at("keyword", "and"):
            self.i += 1
            parts.append(self.unary())
        return " and ".join(parts)

    def unary(self) -> str:
        tok = self.peek()
        if tok.kind == "(" or self.at("keyword", "not"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise FilterError(f"nesting deeper than {MAX_DEPTH} at position {tok.pos}")
            self.i += 1
            if tok.kind == "(":
                inner = self.expr()
                self.take(")", what="')'")
                out = f"({inner})"
            else:
                out = f"not ({self.unary()})"
            self.depth -= 1
            return out
        return self.comparison()

    def comparison(self) -> str:
        tok = self.take("name", what="a field name")
        if tok.text not in FIELDS:
            raise FilterError(f"unknown field {tok.text!r} at position {tok.pos}: filter on any of "
                              f"{', '.join(FIELDS)}")
        if self.at("keyword", "in"):
            self.i += 1
            opening = self.take("[", what="'['")
            values = [self.literal(tok.text)]
            while self.at(",", ","):
                self.i += 1
                values.append(self.literal(tok.text))
                if len(values) > MAX_IN:
                    raise FilterError(f"the list opened at position {opening.pos} has over {MAX_IN} values")
            self.take("]", what="']'")
            return f"{tok.text} in [{', '.join(values)}]"
        op = self.take("op", what="a comparison (== != < <= > >=) or 'in'")
        return f"{tok.text} {op.text} {self.literal(tok.text)}"

    def literal(self, name: str) -> str:
        kind, tok = FIELDS[name], self.peek()
        if kind == STRING:
            if tok.kind != "string":
                raise FilterError(f"field {name} takes a string, got {_shown(tok)} at position {tok.pos}")
            _check_text(tok)
            self.i += 1
            return json.dumps(tok.text, ensure_ascii=False)
        if tok.kind != "number" or (kind == INTEGER and not _INTEGER.fullmatch(tok.text)):
            want = "an integer" if kind == INTEGER else "a number"
            raise FilterError(f"field {name} takes {want}, got {_shown(tok)} at position {tok.pos}")
        value = float(tok.text) if kind == NUMBER else int(tok.text)
        if not (math.isfinite(value) if kind == NUMBER else -2**63 <= value < 2**63):
            raise FilterError(f"number {tok.text[:40]!r} at position {tok.pos} is out of range for field {name}")
        self.i += 1
        return repr(value)


def _check_text(tok: Token) -> None:
    for offset, c in enumerate(tok.text):
        if unicodedata.category(c) in _BAD_CATEGORIES:
            raise FilterError(f"string at position {tok.pos} holds the character U+{ord(c):04X} "
                              f"({unicodedata.category(c)}) at offset {offset}: control and format characters "
                              "are not allowed")


def _shown(tok: Token) -> str:
    if tok.kind == "end":
        return "the end of the filter"
    return f"{tok.kind} {tok.text!r}" if tok.kind in ("string", "number") else repr(tok.text)


def parse_filter(text: str) -> str:
    """A filter checked against the grammar and re-rendered for Milvus ("" for a blank one); FilterError
    naming the token and its position otherwise."""
    if not isinstance(text, str):
        raise FilterError(f"expected a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"{len(text)} characters, at most {MAX_LENGTH}")
    tokens = tokenize(text)
    if tokens[0].kind == "end":
        return ""
    parser = _Parser(tokens)
    out = parser.expr()
    parser.take("end", what="'and', 'or' or the end of the filter")
    return out
