"""A persistent cache of LLM answers, so a rerun or a resumed run asks nothing twice.

One SQLite file (``annotations/.llm-cache.sqlite`` in a workspace). The key
is a SHA-256 over the note's text hash, the prompt version, the model, the
response schema and every parameter that changes the request (strategy,
examples shown, temperature, token limit): change any of them and the note
is asked again. Only answers that parsed and matched the schema are stored,
each committed as soon as it arrives, so a crash loses at most the requests
in flight. The cache holds LLM answers about released synthetic notes, the
screened zone; no real text ever reaches it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from appliance import crashpoints
from appliance.errors import WorkspaceError
from appliance.security.audit import utc_now

__all__ = ["AnswerCache", "cache_key"]


def cache_key(**parts: Any) -> str:
    """A stable key over JSON-serializable parts (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, content TEXT NOT NULL, "
                "model TEXT, created TEXT)"
            )
        except sqlite3.DatabaseError as exc:
            raise WorkspaceError(
                f"{path}: the LLM answer cache is unreadable ({exc}); delete it to start afresh"
            ) from exc

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT content FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, content: str, model: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO answers (key, content, model, created) VALUES (?, ?, ?, ?)",
            (key, content, model, utc_now()),
        )
        crashpoints.reached("annotate.cache")

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        self.db.close()
