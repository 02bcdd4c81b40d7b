"""Orchestration: recipes and grids, the plan and its state, filling the tables, clearing results, local workers
and Slurm.

``recipes`` reads recipe files and expands ``--set`` overrides and grids, ``plan`` turns experiments into table
rows and reports their state, ``fill`` checks and writes the configs, ``workers`` trains the rows (one process or
many, through DataJoint's job queue), ``slurm`` submits workers to a cluster and ``clear`` deletes results. The
package itself imports nothing: reading a plan's state must not import torch.
"""
