"""Generation actors: engines, the structured state manager, the actor loop (issue 7)."""
