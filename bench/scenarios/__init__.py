"""One module per scenario; each has ``run(context) -> ScenarioResult``."""
