"""The one progress callback shape the library reports through: (stage, done, total).

Library code never prints; the CLI turns these calls into bars (a terminal) or plain lines (a pipe).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # (stage, done, total)
