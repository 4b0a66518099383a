"""The service's request limits (``genrec serve`` options): what one client may ask of the server.

Each limit has a default that keeps one request's cost bounded on a small machine, is a
``genrec serve`` option, and when exceeded is answered with a 4xx or 503 naming the option, so a
client knows what to change and an operator what to raise:

=====================  =======================  ========  ===================================
limit                  option                   default   answer when exceeded
=====================  =======================  ========  ===================================
request body           ``--max-body-bytes``     1000000   413, field ``body``
history length         ``--max-history``        10000     422, field ``history`` (longer
                                                          than the model's window but within
                                                          the cap: cut to the window's last
                                                          items, as training does)
``k``                  ``--max-k``              100       422, field ``k``
items per POST /items  ``--max-new-items``      1000      413, field ``items``
item text length       ``--max-text-chars``     10000     422, field ``items[i].<field>``
waiting requests       ``--max-queue``          1000      503, field ``queue``
time per request       ``--request-timeout-s``  30        503, field ``timeout``
=====================  =======================  ========  ===================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genrec_core.serving.errors import RequestError

#: field name -> the ``genrec serve`` option that sets it (named in every refusal).
OPTIONS = {
    "max_body_bytes": "--max-body-bytes",
    "max_history": "--max-history",
    "max_k": "--max-k",
    "max_new_items": "--max-new-items",
    "max_text_chars": "--max-text-chars",
    "max_queue": "--max-queue",
    "request_timeout_s": "--request-timeout-s",
}


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_history: int = 10_000
    max_k: int = 100
    max_new_items: int = 1_000
    max_text_chars: int = 10_000
    max_queue: int = 1_000
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{OPTIONS[f.name]} must be a positive number, got {value!r}")

    def check_recommend(self, history: Sequence[Any], k: int) -> None:
        """Refuse a /recommend request over the history or k cap (before any id is looked up)."""
        if len(history) > self.max_history:
            raise RequestError(
                "history",
                f"{len(history)} items; at most {self.max_history} (the server's {OPTIONS['max_history']}); only the last items up to the model's "
                "window are used, so send those",
            )
        if isinstance(k, int) and not isinstance(k, bool) and k > self.max_k:
            raise RequestError("k", f"must be at most {self.max_k} (the server's {OPTIONS['max_k']}), got {k}")

    def check_new_items(self, items: Sequence[Any]) -> None:
        """Refuse a POST /items over the item count or a text over the length cap."""
        if len(items) > self.max_new_items:
            raise RequestError(
                "items",
                f"{len(items)} items; at most {self.max_new_items} per request (the server's {OPTIONS['max_new_items']}); send them in several requests",
                413,
            )
        for row, item in enumerate(items):
            if not isinstance(item, Mapping):
                continue  # add_items names the malformed record
            for key, value in item.items():
                if isinstance(value, str) and len(value) > self.max_text_chars:
                    name = key if isinstance(key, str) and len(key) <= 40 and key.isprintable() else "field"
                    raise RequestError(
                        f"items[{row}].{name}", f"{len(value)} characters; at most {self.max_text_chars} (the server's {OPTIONS['max_text_chars']})"
                    )

    def queue_full(self, waiting: int) -> RequestError:
        return RequestError(
            "queue", f"the server is busy: {waiting} requests wait to be ranked (the server's {OPTIONS['max_queue']} = {self.max_queue}); retry later", 503
        )

    def timed_out(self) -> RequestError:
        return RequestError("timeout", f"not ranked within {self.request_timeout_s:g} s (the server's {OPTIONS['request_timeout_s']}); retry later", 503)

    def body_too_large(self, size: int | None) -> RequestError:
        got = f"{size} bytes" if size is not None else "more"
        return RequestError("body", f"request body of {got}; at most {self.max_body_bytes} bytes (the server's {OPTIONS['max_body_bytes']})", 413)
