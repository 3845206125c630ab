"""`python -m devstack ...` is the same as the `cqrs` console script."""

from devstack.cli import main

raise SystemExit(main())
