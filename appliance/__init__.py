"""appliance: on-premise clinical NER from screened synthetic notes.

Importing the package pins the offline settings every model-loading path
relies on, so nothing can reach a model hub or send usage statistics, even
when a library is used directly from Python rather than through the CLI.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def apply_offline_env() -> None:
    """Force the offline settings (explicit values, not setdefault: a stray
    HF_HUB_OFFLINE=0 in the environment must not re-enable downloads)."""
    os.environ.update(OFFLINE_ENV)


apply_offline_env()
