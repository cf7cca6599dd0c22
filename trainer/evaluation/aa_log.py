"""AutoAttack's own log: its progress lines go to a file next to the results, its misuse warnings into the
result's suspicious findings."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator


class _WarningCollector(logging.Handler):
    """Keeps AutoAttack's own misuse warnings (randomized defense, probability outputs, Square beating the gradient
    attacks...) for the result's suspicious findings."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"AutoAttack: {record.getMessage()}"
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def autoattack_log(path: Path | None) -> Iterator[list[str]]:
    """For the duration, sends the 'auto-attack' logger (progress at DEBUG, warnings of its checks) to `path` (None:
    no file) and collects its warnings into the yielded list."""
    logger = logging.getLogger("auto-attack")
    collector = _WarningCollector()
    handlers: list[logging.Handler] = [collector]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="a"))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    saved = logger.level, logger.propagate
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield collector.messages
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
