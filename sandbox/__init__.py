"""The jailed ast-grep sandbox: `prepare_workspace`, `apply_action`, `run_tests`, `cleanup`, `SandboxPool`."""

from sandbox.models import InvalidAction, RewriteAction, RuleAction, SandboxResult, TestResult, TestSpec, parse_action
from sandbox.pool import PoolFull, SandboxPool
from sandbox.runner import Sandbox, apply_action, cleanup, prepare_workspace, run_tests

__all__ = [
    "InvalidAction", "RewriteAction", "RuleAction", "SandboxResult", "TestResult", "TestSpec", "parse_action",
    "PoolFull", "Sandbox", "SandboxPool", "apply_action", "cleanup", "prepare_workspace", "run_tests",
]
