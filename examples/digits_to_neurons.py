"""Do features learned to classify digits help predict how (simulated) neurons respond to digits?

    nntransfer run examples/digits_to_neurons.py --workers 2   # results, comparison by mean test correlation
    python examples/digits_to_neurons.py                       # the same run in one process, then the comparison

Data: two recording sessions of 40 simulated V1-like neurons each (``nntransfer.dataset.simulate_neurons``:
localised, oriented Gabor receptive fields, about half simple and half complex cells, Poisson spike counts) shown
scikit-learn's 8×8 digits upsampled to 16×16; offline, written once under ``$NNTRANSFER_HOME/data``. 1150 training,
287 validation and 360 test trials per session; the digits' test images are the sessions' test tier, never seen
in pretraining. The best any model can reach on this data is the correlation of the true rates with the spike
counts on the test trials: 0.758 and 0.766 (``test_ceiling_correlation`` in each session's ``config.json``).

Model: a LeNet core (both convolutions, cut before the second pooling: 16 feature maps of 8×8) with one
neuralpredictors ``FullGaussian2d`` readout per session, trained with neuralpredictors' Poisson loss and its
default readout penalty (``gamma_readout=0.0076``) weighed as nnvision's trainers weigh it
(``gamma_convention="nnvision"``; see docs/neural.md). Three variants, three seeds each:

* scratch: the core starts from random weights;
* pretrained, frozen: the core of a LeNet trained to classify the 16×16 digits, kept fixed; only the readouts
  (and a batch norm after the core) are trained;
* pretrained, fine-tuned: the same core, trained further with the readouts.

Every variant trains (batches of 64, Adam at 0.01) until its validation correlation, the mean over the two
sessions, has not improved for 5 epochs (at most 80), and ends with its best epoch's parameters; the pretraining
likewise on the digits' validation accuracy. Compared by the mean test correlation over the two sessions,
``test/correlation`` (``--metric correlation``; the default for this recipe). The pretraining step is shared by
both pretrained variants (same key), so it is trained once per seed.

What the numbers show (the first run; mean ± sample std over n = 3 seeds):

    variant                   mean test correlation   epochs (best)
    scratch                   0.713 ± 0.003           41-49 (36-44)
    pretrained, frozen        0.639 ± 0.005           36-39 (31-34)
    pretrained, fine-tuned    0.718 ± 0.000           32-43 (27-38)
    (the pretrained LeNets: 0.967-0.972 test accuracy on the 16x16 digits)

Every run stopped early, none at the epoch limit. The fine-tuned pretrained core ends slightly above the core
trained from scratch, in every seed (by 0.001 to 0.008; 0.005 on average, more than either variant's spread), and
the frozen one clearly below both (by 0.07 to 0.08), with the ceiling at about 0.76. With 1150 training images per
session the core can be learned from the neurons themselves; the digit classifier's features alone fall well
short of it, and as a starting point they give a small gain.

The first run (a fresh database, simulating the sessions, 12 trainings) took 3 min 51 s wall with ``--workers 2``
on two cores shared with other work (load average 3-5; the two workers' trainings took 374 s of wall time in all).
A run at load average 6-8 took 5 min 12 s and gave the same numbers.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, NeuralDatasetConfig, NeuralModelConfig, TrainerConfig
from nntransfer.dataset import simulate_neurons
from nntransfer.db import home

SEEDS = (1, 2, 3)
IMAGE_SIZE = 16
MAX_EPOCHS = 80
PATIENCE = 5
FLOOR = 0.55  # mean test correlation every variant and seed exceeds (tests/test_examples.py)
DATA_DIR = home() / "data" / "digits_to_neurons"
SESSIONS = ["digits-v1-a", "digits-v1-b"]

for number, session in enumerate(SESSIONS):  # idempotent: written once, then reused by every process
    simulate_neurons(DATA_DIR / session, n_neurons=40, image_size=IMAGE_SIZE, seed=number)

digits = ImageDatasetConfig(dataset_cls="digits", input_width=IMAGE_SIZE, input_height=IMAGE_SIZE, batch_size=64,
                            in_memory=True, comment="digits, 16x16")
lenet = ModelConfig(type="lenet")
# num_threads=1: these models are too small to split over threads; one is fastest on cores shared with other work.
# Runs of a minute or two need no checkpoint every epoch (save_every_n=10).
pretrain = TrainerConfig(max_iter=20, patience=5, optimizer_options={"lr": 0.003}, verbose=False, num_threads=1,
                         save_every_n=10, comment="pretrain on digits")

neurons = NeuralDatasetConfig(data_dir=str(DATA_DIR), sessions=SESSIONS, batch_size=64, in_memory=True,
                              comment="simulated neurons, 2 sessions")
lenet_core = NeuralModelConfig(type="lenet", core_layer="core.4", gamma_convention="nnvision",
                               comment="LeNet core + Gaussian readouts")
train_neurons = TrainerConfig(max_iter=MAX_EPOCHS, patience=PATIENCE, optimizer_options={"lr": 0.01},
                              loss_functions={"neurons": "PoissonLoss"}, metrics=["correlation"],
                              stop_metric="correlation", verbose=False, num_threads=1, save_every_n=10,
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


if __name__ == "__main__":
    from nntransfer import run
    from nntransfer.analysis import comparison, format_table

    rows = run(transfer_experiments)
    print("\nMean test correlation over the two sessions (mean, sample std over seeds, n):")
    print(format_table(comparison(rows, "correlation")))
