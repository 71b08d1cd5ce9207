"""Command-line commands of the later stages, one module per stage.

Each module defines its click commands on the group from :mod:`appliance.cli`
(imported at the end of that module, so the shared options and helpers exist);
commands only parse options and call the stage's ``run(...)``.
"""
