"""The structured state manager (specification section 5): `State`, `merge`, `render`, budgets, SQLite storage.

`load(task_id)` and `save(task_id, state)` use the store under the actors settings' lake; an actor owns its own
`StateStore`.

    python -m actors.state dump <task_id> [--db PATH]     (default: <actors.lake>/state/states.db)
"""

from actors.state.model import (
    InvalidStateUpdate, State, StateUpdate, as_state, heuristic_tokens, merge, parse_update, render, summarize_history,
    token_budget, tokenizer_counter,
)
from actors.state.store import StateDatabaseError, StateStore, default_store, load, save

__all__ = [
    "InvalidStateUpdate", "State", "StateDatabaseError", "StateStore", "StateUpdate", "as_state", "default_store", "heuristic_tokens", "load", "merge",
    "parse_update", "render", "save", "summarize_history", "token_budget", "tokenizer_counter",
]
