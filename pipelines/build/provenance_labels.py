"""Provenance labels on the curated rows: the agent actions of the commits a row names, and their latest outcome.

A row's `provenance.commits` (a field session's git output and envelope metadata, a telemetry turn's payload, a
public record's `commit:` tag) are matched against the `provenance` table's agent actions as the query API's
`by-commit` matches them: an action counts when a row commit names its `commit`, or the `linked_commit` of one of
its outcomes; a hex commit of 4 to 64 digits names the same SHA as git abbreviates it (one a prefix of the other,
case aside), any other text only itself. When the row names repositories (`provenance.repos`), the action's `repo` must
be one of them, compared without case, `.git` or a host and owner in front (`my-project` is `github.com/acme/my-project`).
Missing actions (outcomes only) label nothing.

The labels are made while the tables are written, from this build's `provenance` table, so rows reused from a parent
build get the provenance that has arrived since.
"""

from __future__ import annotations

import bisect
import string
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trajforge.contracts.curated import PROVENANCE

MIN_ABBREV, MAX_SHA = 4, 64  # git's shortest abbreviation; a SHA-256 object name
LABELS = ("agent_actions", "outcome", "agent_action_ids")


def _hex(commit: str) -> bool:
    return MIN_ABBREV <= len(commit) <= MAX_SHA and all(c in string.hexdigits for c in commit)


def _repo(name: str) -> str:
    name = name.strip().lower().rstrip("/")
    return name[:-4] if name.endswith(".git") else name


def same_repo(a: str, b: str) -> bool:
    a, b = _repo(a), _repo(b)
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


class Labeller:
    """An index of the `provenance` table's actions by commit; `label` adds the labels to a batch of curated rows."""

    def __init__(self, table: pa.Table):
        actions = table.filter(pc.equal(table.column("action_found"), True)).select(["event_id", "repo", "commit", "outcome", "outcome_at", "outcomes"])
        self.ids: list[str] = []
        self.repos: list[str | None] = []
        self.latest: list[tuple[float, str, int] | None] = []  # the latest outcome's (received_at, file, line): orders the outcomes
        self.status: list[str | None] = []
        self.exact: dict[str, set[int]] = defaultdict(set)  # a commit as given -> actions
        self.lowered: dict[str, set[int]] = defaultdict(set)  # a hex commit, lowercase -> actions
        self.sorted: list[tuple[str, int]] = []  # (hex commit lowercase, action), sorted: the SHAs a short one abbreviates
        for number, action in enumerate(actions.to_pylist()):
            self.ids.append(action["event_id"])
            self.repos.append(action["repo"])
            self.status.append(action["outcome"])
            last = (action["outcomes"] or [None])[-1]
            self.latest.append(None if last is None else (last["received_at"], *_place(last["raw_id"])))
            for commit in {action["commit"], *(item["linked_commit"] for item in action["outcomes"] or [])}:
                if not commit:
                    continue
                self.exact[commit].add(number)
                if _hex(commit):
                    self.lowered[commit.lower()].add(number)
                    self.sorted.append((commit.lower(), number))
        self.sorted.sort()
        self.labelled: Counter = Counter()  # table -> rows labelled with at least one action

    def actions_of(self, commit: str) -> set[int]:
        """The actions a row's commit names (see the module's doc)."""
        found = set(self.exact.get(commit, ()))
        if _hex(commit):
            short = commit.lower()
            for end in range(MIN_ABBREV, len(short) + 1):
                found |= self.lowered.get(short[:end], set())
            start = bisect.bisect_left(self.sorted, (short, -1))
            stop = bisect.bisect_left(self.sorted, (short + "g", -1))
            found.update(number for _, number in self.sorted[start:stop])
        return found

    def labels(self, commits: list[str], repos: list[str]) -> tuple[int, str | None, list[str]]:
        """(how many actions, their latest outcome, their event ids) of one row's commits and repositories."""
        found = set().union(*(self.actions_of(commit) for commit in commits if commit)) if commits else set()
        if repos:
            found = {n for n in found if self.repos[n] and any(same_repo(self.repos[n], repo) for repo in repos if repo)}
        decided = [n for n in found if self.latest[n] is not None]
        outcome = self.status[max(decided, key=lambda n: self.latest[n])] if decided else None
        return len(found), outcome, sorted(self.ids[n] for n in found)

    def label(self, table: str, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`batch` with its `provenance` struct's labels filled in (the rows of `table`)."""
        position = batch.schema.get_field_index("provenance")
        if position < 0:
            return batch
        provenance = batch.column(position)
        children = dict(zip((f.name for f in provenance.type), provenance.flatten()))
        count = len(batch)
        actions, outcomes, ids = np.zeros(count, dtype=np.int64), [None] * count, [[] for _ in range(count)]
        if self.ids:
            lengths = pc.fill_null(pc.list_value_length(children["commits"]), 0).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(lengths > 0):
                found, outcome, names = self.labels(children["commits"][row].as_py(), children["repos"][row].as_py() or [])
                actions[row], outcomes[row], ids[row] = found, outcome, names
        self.labelled[table] += int((actions > 0).sum())
        children.update(agent_actions=pa.array(actions, pa.int64()), outcome=pa.array(outcomes, pa.string()),
                        agent_action_ids=pa.array(ids, pa.list_(pa.string())))
        fields = list(PROVENANCE)
        labelled = pa.StructArray.from_arrays([children[f.name].cast(f.type) for f in fields], fields=fields,
                                              mask=provenance.is_null() if provenance.null_count else None)
        columns = [labelled if index == position else column for index, column in enumerate(batch.columns)]
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema.set(position, pa.field("provenance", PROVENANCE)))


def _place(raw_id: str | None) -> tuple[str, int]:
    path, _, line = (raw_id or "").rpartition(":")
    return path, int(line) if line.isdigit() else 0

