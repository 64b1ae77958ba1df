"""The routing table: compiled templates in one segment trie per HTTP method.

Matching prefers, at every segment, a literal over `*` over `**` (backtracking when a branch fails),
so `/users/search/by-email` wins over `/users/{id}` and `/users/me/coupons` still binds `{user_id}`.
A verb (`:archive`) is tried first split off the last segment, then as part of it.
"""

from dataclasses import dataclass, field
from typing import Any

from gateway.templates import DOUBLE_STAR, LITERAL, STAR, Template


@dataclass
class _Node:
    literals: dict[str, "_Node"] = field(default_factory=dict)
    star: "_Node | None" = None
    ends: dict[str, Any] = field(default_factory=dict)  # verb -> target when the path ends here
    rest: dict[str, Any] = field(default_factory=dict)  # verb -> target of a trailing `**` (zero or more segments)


@dataclass(frozen=True)
class Match:
    target: Any  # what was added with the template (a transcode.Route)
    template: Template
    segments: list[str]  # the raw request segments the template matched, verb removed

    def variables(self) -> dict[tuple[str, ...], str]:
        return {v.field_path: v.value(self.segments) for v in self.template.variables}


class ConflictError(ValueError):
    pass


class Router:
    def __init__(self):
        self._tries: dict[str, _Node] = {}

    def add(self, http_method: str, template: Template, target: Any) -> None:
        """Adds a route; the same method, shape and verb twice is a conflict."""
        node = self._tries.setdefault(http_method.upper(), _Node())
        for segment in template.segments:
            if segment.kind == LITERAL:
                node = node.literals.setdefault(segment.value, _Node())
            elif segment.kind == STAR:
                node.star = node.star or _Node()
                node = node.star
            else:
                break
        table = node.rest if template.segments[-1].kind == DOUBLE_STAR else node.ends
        if template.verb in table:
            raise ConflictError(f"{http_method} {template.text} conflicts with {table[template.verb][1].text}")
        table[template.verb] = (target, template)

    def match(self, http_method: str, raw_path: str) -> Match | None:
        trie = self._tries.get(http_method.upper())
        if trie is None:
            return None
        segments = raw_path.lstrip("/").split("/")
        last = segments[-1]
        if ":" in last:
            head, _, verb = last.rpartition(":")
            found = _walk(trie, segments[:-1] + [head], 0, verb)
            if found:
                return Match(found[0], found[1], segments[:-1] + [head])
        found = _walk(trie, segments, 0, "")
        return Match(found[0], found[1], segments) if found else None

    def allowed_methods(self, raw_path: str) -> list[str]:
        """The HTTP methods that have a route for this path (for 405 and CORS preflight)."""
        return sorted(m for m in self._tries if self.match(m, raw_path) is not None)

    def namespaces(self) -> set[str]:
        """The first segments the API owns (`api`, `coupons`): those of a route of one segment or whose second
        is literal. A first segment followed only by a variable (`users` of `/users/{user_id}/coupons`) owns
        just the paths that match, so a page of the static site may have that name too."""
        return {
            name
            for trie in self._tries.values()
            for name, node in trie.literals.items()
            if node.literals or node.ends or node.rest
        }


def _walk(node: _Node, segments: list[str], index: int, verb: str):
    if index == len(segments):
        return node.ends.get(verb) or node.rest.get(verb)
    child = node.literals.get(segments[index])
    if child is not None:
        found = _walk(child, segments, index + 1, verb)
        if found:
            return found
    if node.star is not None and segments[index]:
        found = _walk(node.star, segments, index + 1, verb)
        if found:
            return found
    return node.rest.get(verb)
