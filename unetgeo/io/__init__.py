"""Input and output: the only modules that open files or URLs."""
