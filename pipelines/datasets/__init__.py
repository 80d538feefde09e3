"""Public code-edit datasets into the lake (seed 002 section 3): ingest, normalize, process into splits, report.

    trajforge datasets [--stage all|ingest|process] [--only NAME] [--force] [--lake ./lake]
    ray job submit --working-dir . -- python -m pipelines.datasets --lake /shared/lake

`settings.py` reads configs/datasets.yaml; `fetch.py` gets and checks a source; `adapters.py` reads the layouts;
`ingest.py` publishes lake/raw/datasets/<name>/ (`meta.py`: its _meta.json); `languages.py` confirms languages;
`process.py` is the Ray Data job that writes lake/processed/datasets/; `report.py` the Markdown reports.
"""

from pipelines.datasets.cli import main

__all__ = ["main"]
