"""Sacred experiments of mnerqg-graph (the only place, with the CLI, that reads configuration)."""
