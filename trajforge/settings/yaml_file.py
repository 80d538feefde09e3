"""Config files as YAML text: a key written twice in one mapping is an error (YAML's own rule, which PyYAML does not
apply: it kept the last value, so an edit above a key already set was ignored without a word), and every YAML error
is one line naming where it was found."""

from __future__ import annotations

from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that holds a key twice (merge keys `<<` excepted: overriding is their job)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the safe constructor refuses it with its own words
                    continue
                if first is not key_node.start_mark:
                    raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                            f"found the key {key!r} twice (first at line {first.line + 1})",
                                                            key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """The YAML document in `text`, read safely, a key written twice refused."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line, from where it was found (1-based, as editors count): ` at line 4, column 4: expected
    <block end>, but found '<block mapping start>' (while parsing a block mapping at line 2, column 3)`. PyYAML's own
    text spans several lines and names the file `<unicode string>`."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return f": {' '.join(str(exc).split())}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    text = f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if context and context_mark is not None and (context_mark.line, context_mark.column) != (mark.line, mark.column):
        text += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        text += f" ({context})"
    return text
