"""Logging setup for the CLI: readable text by default, JSON lines with --log-json, and (--log-dir) JSON lines in a
folder, one file per UTC day, for the command and for the Ray workers it starts."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path

from trajforge.errors import ConfigError

LOG_DIR_ENV = "TRAJFORGE_LOG_DIR"
LOG_LEVEL_ENV = "TRAJFORGE_LOG_LEVEL"
KEEP_DAYS_ENV = "TRAJFORGE_LOG_KEEP_DAYS"
DEFAULT_KEEP_DAYS = 14
WORKERS_STEM = "workers"
PROGRESS_INTERVAL_S = 30
"""How often a progress bar redraws where stderr is no terminal (tqdm's TQDM_MININTERVAL, unless it is set)."""
STDOUT_LOGGERS = ("DeepSpeed",)
"""Libraries whose logger writes to stdout with a handler of its own (DeepSpeed's, on import where no GPU is seen:
"Setting accelerator to CPU", which transformers' model loading triggers)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ToCommandHandlers(logging.Filter):
    """On the logger of a library that writes to stdout: each record goes to the command's handlers (stderr, --log-dir)
    instead, as the command's own do, since a command's stdout is its answer (`--json` output a pipe reads)."""

    def filter(self, record: logging.LogRecord) -> bool:
        root = logging.getLogger()
        if root.isEnabledFor(record.levelno):  # the command's --log-level, not the library's own
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        return False


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the one at setup.

    A CLI entry point called in-process (a notebook, a test runner that swaps and closes
    stderr between calls) would otherwise keep a dead stream and fail on every later record.
    """

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class DailyJsonFile(logging.Handler):
    """JSON lines in `<directory>/<stem>-YYYY-MM-DD.jsonl`, a new file each UTC day; files of the stem older than the last
    `keep_days` days are deleted when a day's file is opened.

    Several processes may write one file (every Ray worker of a node logs to `workers-<day>.jsonl`): each line is one
    O_APPEND write, and no file is ever renamed, as the standard library's TimedRotatingFileHandler does at midnight
    (which loses lines when two processes rotate the same file)."""

    def __init__(self, directory: str | os.PathLike, stem: str, keep_days: int = DEFAULT_KEEP_DAYS) -> None:
        super().__init__()
        self.directory, self.stem, self.keep_days = Path(directory), stem, keep_days
        self.day: str | None = None
        self.fd: int | None = None
        self.setFormatter(JsonFormatter())
        self._open(_utc_day(time.time()))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            day = _utc_day(record.created)
            if day != self.day:
                self._open(day)
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except Exception:  # logging must never raise into the caller: the standard handlers' rule
            self.handleError(record)

    def path(self, day: str) -> Path:
        return self.directory / f"{self.stem}-{day}.jsonl"

    def _open(self, day: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(day), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.day = fd, day
        self._delete_older_than(datetime.date.fromisoformat(day) - datetime.timedelta(days=self.keep_days - 1))

    def _delete_older_than(self, first_kept: datetime.date) -> None:
        for path in self.directory.glob(f"{self.stem}-*.jsonl"):
            try:
                day = datetime.date.fromisoformat(path.name[len(self.stem) + 1:-len(".jsonl")])
            except ValueError:
                continue
            if day < first_kept:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        super().close()


def _utc_day(created: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(created))


def keep_days() -> int:
    """How many days of log files a folder keeps: $TRAJFORGE_LOG_KEEP_DAYS, else 14."""
    text = os.environ.get(KEEP_DAYS_ENV, "").strip()
    if not text:
        return DEFAULT_KEEP_DAYS
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise ConfigError(f"{KEEP_DAYS_ENV}={text!r} is not a whole number of days of at least 1: set it to, e.g., 14")
    return days


def setup_logging(level: str = "INFO", as_json: bool = False, log_dir: str | None = None, stem: str = "trajforge") -> None:
    """The process's logging: text (or JSON lines) on stderr, and with `log_dir` JSON lines in that folder, one file a
    day (`<stem>-<day>.jsonl`). The folder and level also go to the environment, so the Ray workers this process
    starts log there too (`worker_runtime_env`). A folder that cannot be written is a ConfigError naming it."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers: list[logging.Handler] = [handler]
    if log_dir:
        folder = Path(log_dir).expanduser().absolute()
        try:
            handlers.append(DailyJsonFile(folder, stem, keep_days()))
        except OSError as exc:
            raise ConfigError(f"cannot write logs to {folder}: {exc.strerror or exc}; give --log-dir (or "
                              f"${LOG_DIR_ENV}) a folder this user can create and write") from None
        os.environ[LOG_DIR_ENV], os.environ[LOG_LEVEL_ENV] = str(folder), level
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, DailyJsonFile):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    # One line per HTTP request from the client library is noise at INFO.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    for name in STDOUT_LOGGERS:  # made now, so the library's own setup (on its import) finds it with the filter on
        library = logging.getLogger(name)
        if not any(isinstance(existing, ToCommandHandlers) for existing in library.filters):
            library.addFilter(ToCommandHandlers())
    slow_progress_bars_off_a_terminal()


def slow_progress_bars_off_a_terminal() -> None:
    """tqdm redraws a bar every 0.1 s; where stderr is no terminal (the log of a `ray job submit` job, a file, a pipe)
    each redraw is a line of the log, thousands for a long run: there, bars redraw once every PROGRESS_INTERVAL_S. Ray
    Data, where stdout is no terminal, logs a block of lines per dataset every 10 s instead of its bars: there, every
    PROGRESS_INTERVAL_S too (read when Ray Data is imported, which every command does after this)."""
    if not _terminal(sys.stderr):
        os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_INTERVAL_S))
    if not _terminal(sys.stdout):
        os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", str(PROGRESS_INTERVAL_S))


def _terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def worker_runtime_env() -> dict:
    """What `ray.init` adds to the job's runtime environment so that its workers (tasks, actors, Serve replicas, Ray
    Train workers) also log JSON lines to the folder of `--log-dir`, on their own node: nothing without one."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return {}
    env_vars = {LOG_DIR_ENV: folder, LOG_LEVEL_ENV: os.environ.get(LOG_LEVEL_ENV, "INFO"), KEEP_DAYS_ENV: str(keep_days())}
    return {"env_vars": env_vars, "worker_process_setup_hook": f"{__name__}.setup_worker_logging"}


def setup_worker_logging() -> None:
    """Ray's `worker_process_setup_hook` for `worker_runtime_env`: this worker's records also go to
    `<folder>/workers-<day>.jsonl`. A node where the folder cannot be made logs as Ray's workers always do (Ray's
    own log files), with one warning there."""
    folder = os.environ.get(LOG_DIR_ENV)
    root = logging.getLogger()
    if not folder or any(isinstance(handler, DailyJsonFile) for handler in root.handlers):
        return
    try:
        handler = DailyJsonFile(folder, WORKERS_STEM, keep_days())
    except (OSError, ConfigError) as exc:
        logging.getLogger(__name__).warning("not logging to %s on this node: %s", folder, exc)
        return
    if not root.handlers:
        # Without handlers of its own a worker's warnings reach Ray's log files through logging's last resort (stderr),
        # which a handler on the root turns off: keep them there.
        stderr = logging.StreamHandler()
        stderr.setLevel(logging.WARNING)
        root.addHandler(stderr)
    root.addHandler(handler)
    root.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO"))
