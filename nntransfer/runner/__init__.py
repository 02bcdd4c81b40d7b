"""Building and training experiments and transfer chains in memory, with no database."""
