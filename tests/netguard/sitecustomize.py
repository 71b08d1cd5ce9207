"""Loaded by every Python subprocess a test starts (PYTHONPATH): the same network guard."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.netguard.guard import install

install()
