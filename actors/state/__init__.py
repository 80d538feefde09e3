"""The structured state manager (specification section 5): `State`, `merge`, `render`, budgets, SQLite storage.

    python -m actors.state dump <task_id> [--db lake/state/states.db]
"""

from actors.state.model import (
    InvalidStateUpdate, State, StateUpdate, heuristic_tokens, merge, parse_update, render, summarize_history,
    token_budget, tokenizer_counter,
)
from actors.state.store import StateStore

DEFAULT_DB = "lake/state/states.db"

__all__ = [
    "DEFAULT_DB", "InvalidStateUpdate", "State", "StateStore", "StateUpdate", "heuristic_tokens", "merge", "parse_update",
    "render", "summarize_history", "token_budget", "tokenizer_counter",
]
