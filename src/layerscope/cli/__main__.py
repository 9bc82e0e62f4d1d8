"""``python -m layerscope.cli``: the ``layerscope`` command."""

from layerscope.cli import main

main()
