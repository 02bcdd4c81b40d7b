"""When does pretraining on digits 0–4 help learning digits 5–9? A data-budget sweep.

    nntransfer run examples/digits_transfer.py

On scikit-learn's bundled 8×8 digits (offline), a LeNet learns digits 5–9 from 3, 10 or 30 examples
per class, or from all of them, in three ways, with two seeds each:

* baseline (from scratch): trained on 5–9 only;
* transfer (fine-tune all): pretrained on all of digits 0–4, then every parameter fine-tuned on 5–9;
* transfer (core frozen): the same pretraining; the convolutional core keeps its pretrained weights and
  only the classifier (``readout``) is trained on 5–9.

The pretraining step has the same key in every transfer variant and budget, so it is trained once per
seed. ``nntransfer run`` prints the results and writes the report (its sweep plot shows test accuracy
against ``examples_per_class``); ``nntransfer results examples/digits_transfer.py`` shows them again.

The transfer variants get a new output layer (``reset=["readout.7"]``): the pretrained one has learned
to rule out 5–9, and fine-tuning it from a few examples does not undo that (test accuracy 0).

What the results show (two seeds, test accuracy; the report's sweep plot): with 3 and 10 examples per
class, the fine-tuned pretrained LeNet beats the one trained from scratch; from 30 examples per class on,
training from scratch is better or as good (within the two seeds' spread) — pretraining stops helping. Keeping the pretrained core
frozen is never better than fine-tuning it. Two seeds give a wide spread at small budgets (the points
in the plot); add seeds to narrow it.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEEDS = (1, 2)
BUDGETS = (3, 10, 30, None)  # examples per class of digits 5-9; None: all of them

digits_0_4 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32,
                                comment="digits 0-4")
lenet = ModelConfig(type="lenet")
# num_threads=1: a LeNet on 8x8 images is too small to split over threads; one thread is fastest, and far
# faster when other programs share the cores (set per run, not for the whole process)
pretrain = TrainerConfig(max_iter=15, optimizer_options={"lr": 0.003}, patience=5, verbose=False, save_every_n=5,
                         num_threads=1, comment="pretrain")
scratch = TrainerConfig(max_iter=30, optimizer_options={"lr": 0.003}, patience=8, verbose=False, save_every_n=5,
                        num_threads=1, comment="from scratch")
# transfer: a new output layer for the new classes (the pretrained one learned to rule out 5-9)
finetune = scratch.replace(reset=["readout.7"], comment="finetune, new output layer")
finetune_frozen = finetune.replace(freeze=["core.*"], comment="finetune, core frozen, new output layer")


def digits_5_9(budget):
    return ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=budget,
                              valid_size=0.3, batch_size=64, comment=f"digits 5-9, {budget or 'all'} per class")


transfer_experiments = {}
for budget in BUDGETS:
    label = f"[examples_per_class={budget or 'all'}]"  # grid-style names: the sweep plot draws one line per variant
    for seed in SEEDS:
        target = digits_5_9(budget)
        transfer_experiments[Description("baseline (from scratch)" + label, seed)] = TransferExperiment(
            [Experiment(target, lenet, scratch, seed)])
        transfer_experiments[Description("transfer (fine-tune all)" + label, seed)] = TransferExperiment(
            [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(target, lenet, finetune, seed)])
        transfer_experiments[Description("transfer (core frozen)" + label, seed)] = TransferExperiment(
            [Experiment(digits_0_4, lenet, pretrain, seed), Experiment(target, lenet, finetune_frozen, seed)])
