"""nntransfer's version (``nntransfer.__version__``; recorded with every result)."""
VERSION = "0.2.0"
