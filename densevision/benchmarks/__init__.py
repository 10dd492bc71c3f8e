"""Measurement library behind ``densevision benchmark``: timing (interleaved rounds, median ratios),
training memory (allocator peak in a fresh subprocess), agreement of inference paths, and the tables of
each subcommand (``backbone``, ``depth``, ``models``, ``family``, ``deploy``). The command itself
(``densevision.apps.benchmark``) only parses arguments and calls these."""
