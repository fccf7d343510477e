"""`python -m character.cli` = `oct`."""

from character.cli.main import main

main()
