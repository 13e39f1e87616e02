"""``python -m tools.loadgen`` from the repository root (what ``nox -s loadgen`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
