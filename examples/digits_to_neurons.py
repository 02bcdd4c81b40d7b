"""Do features learned to classify digits help predict how (simulated) neurons respond to digits?

    nntransfer run examples/digits_to_neurons.py      # the results table, one row per step and seed
    python examples/digits_to_neurons.py              # the same, then the mean test correlation per variant

Data: two recording sessions of 40 simulated V1-like neurons each (``nntransfer.dataset.simulate_neurons``:
localised, oriented Gabor receptive fields, about half simple and half complex cells, Poisson spike counts) shown
scikit-learn's 8×8 digits upsampled to 16×16; offline, written once under ``$NNTRANSFER_HOME/data``. The
digits' test images are the sessions' test tier, never seen in pretraining.

Model: a LeNet core (both convolutions, cut before the second pooling: 16 feature maps of 8×8) with one
neuralpredictors ``FullGaussian2d`` readout per session, trained with neuralpredictors' Poisson loss; early
stopping on the validation correlation. Three variants, two seeds each:

* scratch: the core starts from random weights;
* pretrained, frozen: the core of a LeNet trained to classify the digits, kept fixed; only the readouts
  (and a batch norm after the core) are trained;
* pretrained, fine-tuned: the same core, trained further with the readouts.

The pretraining step is shared by both pretrained variants (same key), so it is trained once per seed.
Every variant's mean test correlation is above ``FLOOR`` (checked by tests/test_neural.py); the best any model
can reach on this data is the correlation of the true rates with the spike counts, about 0.77 (``config.json``
of each session). What our runs show: the fine-tuned core ends about where the core trained from scratch
does, and the frozen one clearly below both. With 1150 training images per session the core can be learned
from the neurons themselves; the digit classifier's features alone fall short of it.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, NeuralDatasetConfig, NeuralModelConfig, TrainerConfig
from nntransfer.dataset import simulate_neurons
from nntransfer.db import home

SEEDS = (1, 2)
IMAGE_SIZE = 16
FLOOR = 0.4  # mean test correlation every variant exceeds
DATA_DIR = home() / "data" / "digits_to_neurons"
SESSIONS = ["digits-v1-a", "digits-v1-b"]

for number, session in enumerate(SESSIONS):  # idempotent: written once, then reused by every process
    simulate_neurons(DATA_DIR / session, n_neurons=40, image_size=IMAGE_SIZE, seed=number)

digits = ImageDatasetConfig(dataset_cls="digits", input_width=IMAGE_SIZE, input_height=IMAGE_SIZE, batch_size=64,
                            in_memory=True, comment="digits, 16x16")
lenet = ModelConfig(type="lenet")
pretrain = TrainerConfig(max_iter=6, optimizer_options={"lr": 0.003}, verbose=False, comment="pretrain on digits")

neurons = NeuralDatasetConfig(data_dir=str(DATA_DIR), sessions=SESSIONS, batch_size=32, in_memory=True,
                              comment="simulated neurons, 2 sessions")
lenet_core = NeuralModelConfig(type="lenet", core_layer="core.4", comment="LeNet core + Gaussian readouts")
train_neurons = TrainerConfig(max_iter=6, optimizer_options={"lr": 0.005}, loss_functions={"neurons": "PoissonLoss"},
                              metrics=["correlation"], stop_metric="correlation", patience=3, verbose=False,
                              comment="neural responses")
frozen = train_neurons.replace(transfer_strict=False, freeze=["core.*"], comment="neural responses, core frozen")
fine_tuned = train_neurons.replace(transfer_strict=False, comment="neural responses, core fine-tuned")

transfer_experiments = {}
for seed in SEEDS:
    transfer_experiments[Description("scratch", seed)] = TransferExperiment(
        [Experiment(neurons, lenet_core, train_neurons, seed)])
    transfer_experiments[Description("pretrained, frozen", seed)] = TransferExperiment(
        [Experiment(digits, lenet, pretrain, seed), Experiment(neurons, lenet_core, frozen, seed)])
    transfer_experiments[Description("pretrained, fine-tuned", seed)] = TransferExperiment(
        [Experiment(digits, lenet, pretrain, seed), Experiment(neurons, lenet_core, fine_tuned, seed)])


def final_test_correlations(rows: list[dict]) -> dict[str, list[float]]:
    """Per variant: its last step's test correlation (mean over sessions), one value per finished seed."""
    done = [row for row in rows if row["state"] == "done"]
    last_step: dict = {}
    for row in done:
        last_step[row["name"]] = max(last_step.get(row["name"], 0), row["step"])
    out: dict = {}
    for row in done:
        if row["step"] == last_step[row["name"]]:
            values = [v for k, v in row.items() if k.startswith("test/") and k.endswith("/correlation")]
            out.setdefault(row["name"], []).append(sum(values) / len(values))
    return out


if __name__ == "__main__":
    from nntransfer import run

    rows = run(transfer_experiments)
    print("\nTest correlation (mean over sessions and seeds):")
    for name, values in final_test_correlations(rows).items():
        print(f"  {name:24s} {sum(values) / len(values):.3f}  (seeds: {', '.join(f'{v:.3f}' for v in values)})")
