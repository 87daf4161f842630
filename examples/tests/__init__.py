"""Example tests: the plugin's fixtures on the example agents."""
