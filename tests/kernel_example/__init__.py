"""A tiny domain for the kernel's own tests (tallies): it stays when the reference saga
is removed, so a project keeps the tests of its group commit, store and metadata."""
