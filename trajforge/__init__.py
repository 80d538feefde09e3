"""trajforge: a Ray-based training-data factory for coding agents.

This package is the shared kernel: contracts, protocol crypto, settings, lake layout and the logic that
more than one component needs. It imports nothing heavy at module level.
"""

__version__ = "0.1.0"
