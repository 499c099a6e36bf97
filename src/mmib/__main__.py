"""``python -m mmib`` runs the command-line interface."""

from mmib.cli import main

raise SystemExit(main())
