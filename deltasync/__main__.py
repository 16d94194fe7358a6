"""``python -m deltasync``: the same as the ``deltasync`` command."""

from .cli import main

main()
