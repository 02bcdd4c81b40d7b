"""The lowest layer: config classes and keys, the registry mechanism, experiments and grids.

Imports neither torch nor DataJoint (nnfabrik's ``make_hash`` is loaded when a key is first computed).
"""
