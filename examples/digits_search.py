"""Tune the fine-tuning step of the digits transfer: learning rate, weight decay and which layers stay frozen.

    nntransfer search examples/digits_search.py --space examples/digits_search_space.yaml --trials 20 --workers 2
    nntransfer search examples/digits_search.py --status      # trials by state, the best one as --set overrides
    nntransfer results examples/digits_search.py --report search_report   # the report with the search's plots

A LeNet is pretrained on digits 0–4 (scikit-learn's bundled 8×8 digits: offline), then fine-tuned on 60 examples
per class of digits 5–9 with a new output layer, as in ``digits_transfer.py``. The search varies the fine-tuning
step (step 1) only, so the pretraining step has the same key in every trial: it is trained once and shared. TPE
proposes configurations (``examples/digits_search_space.yaml``), the median pruner stops trials whose validation
loss falls behind the others' at the same epoch, and every trial is selected on the validation loss of the
fine-tuned model (its ``score``: the fine-tuning step's ``stop_metric`` is the loss, because with 90 validation
images the accuracy of good configurations ties at 1.0); the best trial's test accuracy is reported next to it,
never used to choose.

Twenty trials took 45 s on two idle CPU cores with ``--workers 2`` (a fresh database, its first start included;
2026-12-07): 14 complete, 6 pruned; the best trial (validation loss 0.048) fine-tuned with lr 0.028, weight decay
0.0018 and the first convolution frozen, test accuracy 0.956 (reported, not used to choose). TPE's proposals
depend on which trials finish first, so another run may pick other values.

Stop the search at any time (Ctrl-C, or kill it) and run the same command again: the study continues where it was,
and the interrupted trial resumes from its checkpoint. From Python::

    from nntransfer import choice, loguniform, search
    search(transfer_experiments, {"1.trainer.optimizer_options.lr": loguniform(1e-4, 3e-2),
                                  "1.trainer.freeze": choice([[], ["core.*"]])}, n_trials=20, workers=2)
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEED = 1

digits_0_4 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32,
                                comment="digits 0-4")
digits_5_9 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=60,
                                valid_size=0.3, batch_size=64, comment="digits 5-9, 60 per class")
lenet = ModelConfig(type="lenet")
# num_threads=1: a LeNet on 8x8 images is fastest on one thread (and two search workers share two cores)
pretrain = TrainerConfig(max_iter=15, optimizer_options={"lr": 0.003}, patience=5, verbose=False, save_every_n=5,
                         num_threads=1, comment="pretrain")
# the starting point of the search: what digits_transfer.py fine-tunes with; the search varies lr, weight_decay and
# freeze of this step. Early stopping, the score and so the search use the validation loss (accuracy saturates).
finetune = TrainerConfig(max_iter=20, optimizer_options={"lr": 0.003, "weight_decay": 0.0}, patience=6,
                         stop_metric="loss", verbose=False, save_every_n=5, num_threads=1, reset=["readout.7"],
                         comment="finetune, new output layer")

transfer_experiments = {
    Description("digits finetune", SEED): TransferExperiment([
        Experiment(digits_0_4, lenet, pretrain, SEED),
        Experiment(digits_5_9, lenet, finetune, SEED),
    ]),
}
