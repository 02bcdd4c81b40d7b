"""The database, under its public import path: ``from nntransfer import db; db.status()``.

It lives in :mod:`nntransfer.store.db`.
"""
from .store.db import *  # noqa: F401,F403
from .store.db import __all__  # noqa: F401
