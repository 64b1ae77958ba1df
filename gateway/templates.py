"""google.api.http path templates: parsing, and turning matched path segments into variable values.

Grammar (google/api/http.proto):
    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
`**` may only be the last segment. Matching itself is done by routes.Router over many templates at once.
"""

import re
from dataclasses import dataclass
from urllib.parse import unquote

LITERAL, STAR, DOUBLE_STAR = "literal", "*", "**"
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENCODED_SLASH = re.compile(r"%2[fF]")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    kind: str  # LITERAL, STAR or DOUBLE_STAR
    value: str = ""  # the text of a literal


@dataclass(frozen=True)
class Variable:
    field_path: tuple[str, ...]
    start: int  # index of its first segment
    end: int | None  # one past its last segment; None when it ends with ** (runs to the end of the path)

    @property
    def name(self) -> str:
        return ".".join(self.field_path)

    def value(self, segments: list[str]) -> str:
        """The decoded value from the request's raw (still percent-encoded) segments."""
        parts = segments[self.start : self.end]
        if self.end is not None and self.end - self.start == 1:
            return unquote(parts[0])
        # A multi-segment value keeps an encoded slash encoded, so it stays distinguishable from a separator.
        return "/".join("%2F".join(unquote(p) for p in _ENCODED_SLASH.split(part)) for part in parts)


@dataclass(frozen=True)
class Template:
    text: str
    segments: tuple[Segment, ...]
    verb: str
    variables: tuple[Variable, ...]

    def openapi_path(self) -> str:
        """The template as an OpenAPI path: each variable becomes one `{name}` (multi-segment ones too)."""
        parts: list[str] = []
        position = 0
        for variable in self.variables:
            parts += [_segment_text(s) for s in self.segments[position : variable.start]]
            parts.append("{" + variable.name + "}")
            position = len(self.segments) if variable.end is None else variable.end
        parts += [_segment_text(s) for s in self.segments[position:]]
        return "/" + "/".join(parts) + (":" + self.verb if self.verb else "")


def _segment_text(segment: Segment) -> str:
    return segment.value if segment.kind == LITERAL else segment.kind


def _split_top_level(text: str, separator: str) -> list[str]:
    """Splits on a separator outside braces."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced '}'")
        if char == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise TemplateError("unbalanced '{'")
    parts.append("".join(current))
    return parts


def _plain_segment(text: str) -> Segment:
    if text in (STAR, DOUBLE_STAR):
        return Segment(text)
    if not text or any(c in text for c in "{}*=:"):
        raise TemplateError(f"invalid literal segment {text!r}")
    return Segment(LITERAL, text)


def parse(text: str) -> Template:
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a template starts with '/'")
    top = _split_top_level(text[1:], "/")
    verb_split = _split_top_level(top[-1], ":")
    if len(verb_split) > 2:
        raise TemplateError(f"{text!r}: more than one verb")
    verb = ""
    if len(verb_split) == 2:
        top[-1], verb = verb_split
        _plain_segment(verb)
    segments: list[Segment] = []
    variables: list[Variable] = []
    for part in top:
        if not part.startswith("{"):
            segments.append(_plain_segment(part))
            continue
        if not part.endswith("}"):
            raise TemplateError(f"{text!r}: variable {part!r} is not closed")
        field_path, _, pattern = part[1:-1].partition("=")
        if not _FIELD_PATH.match(field_path):
            raise TemplateError(f"{text!r}: invalid field path {field_path!r}")
        if any(v.name == field_path for v in variables):
            raise TemplateError(f"{text!r}: variable {field_path!r} appears twice")
        start = len(segments)
        segments += [_plain_segment(p) for p in (pattern or STAR).split("/")]
        end = None if segments[-1].kind == DOUBLE_STAR else len(segments)
        variables.append(Variable(tuple(field_path.split(".")), start, end))
    if any(s.kind == DOUBLE_STAR for s in segments[:-1]):
        raise TemplateError(f"{text!r}: '**' must be the last segment")
    return Template(text, tuple(segments), verb, tuple(variables))
