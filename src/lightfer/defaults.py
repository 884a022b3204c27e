"""Project-wide defaults, in a module light enough for the CLI to import before torch."""

DEFAULT_MODEL = "fer_mini_xception"  # what Analyzer(), the CLI and the service use when no model is named
