"""`TRAJFORGE__<SECTION>__<FIELD>` variables that no config reads. A loader applies only its own section's variables
and the others belong to other components, so a misspelt section (`TRAJFORGE__LERNER__OPTIM__LR`) or prefix
(`TRAJFORGE_LEARNER__OPTIM__LR`, one underscore) was ignored by every command without a word: the run went on with
the file's value. A misspelt field inside a known section is refused by the loader that reads it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from trajforge.errors import ConfigError
from trajforge.settings import ENV_PREFIX, SHIPPED_CONFIGS, read_yaml
from trajforge.settings.close_names import closest

log = logging.getLogger(__name__)
ONE_UNDERSCORE = ENV_PREFIX[:-1]


def config_sections() -> set[str]:
    """The sections the shipped configs have: each file's top-level keys, and the Serve file's applications."""
    from trajforge.settings.serve_file import override_roots

    sections: set[str] = set()
    for path in sorted(SHIPPED_CONFIGS.glob("*.yaml")):
        try:
            sections |= set(override_roots(path)) if path.name == "serve.yaml" else \
                {str(key) for key, value in read_yaml(path).items() if isinstance(value, dict)}  # not a prompts file's texts
        except ConfigError:
            continue  # a damaged file is refused, naming it, by the command that reads it
    return sections


def stray_variables(environ: Mapping[str, str] | None = None, known: Iterable[str] = ()) -> list[str]:
    """One line for each override variable that no config reads, with the name meant where one is close. `known` are
    sections the command reads besides the shipped configs' (the applications of a `trajforge serve --config` file)."""
    environ = os.environ if environ is None else environ
    names = sorted(name for name in environ if name.startswith(ONE_UNDERSCORE) and "__" in name[len(ONE_UNDERSCORE):])
    if not names:
        return []
    sections = config_sections() | set(known)
    lines = []
    for name in names:
        if not name.startswith(ENV_PREFIX):
            lines.append(f"{name} is not read: config overrides start with {ENV_PREFIX} (two underscores), e.g. "
                         f"{ENV_PREFIX}{name[len(ONE_UNDERSCORE):].lstrip('_')}")
            continue
        section = name[len(ENV_PREFIX):].split("__", 1)[0].lower()
        if section not in sections:
            near = closest(section, sections)
            meant = f": did you mean {ENV_PREFIX}{near.upper()}__...?" if near else ""
            lines.append(f"{name} is not read: no config has a section {section!r} ({', '.join(sorted(sections))}){meant}")
    return lines


def warn_stray_variables(environ: Mapping[str, str] | None = None, known: Iterable[str] = ()) -> None:
    """Log a warning for each variable of `stray_variables`, at a command's start."""
    for line in stray_variables(environ, known):
        log.warning("%s", line)
