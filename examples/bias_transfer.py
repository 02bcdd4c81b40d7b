"""Does a noise-robust teacher's bias transfer to a student of other classes? Regularised and representational
transfer from a LeNet trained with noise augmentation.

    nntransfer run examples/bias_transfer.py

On scikit-learn's bundled 8×8 digits (offline), three seeds:

* the teacher: a LeNet trained on digits 0–4 with Gaussian noise augmentation in pixel units, the original
  nntransfer's semantics (fixed fractions of every batch: 20 % each at std 0.1, 0.2 and 0.3, 40 % clean, noisy
  pixels clamped to [0, 1]); its EWC module hands over its Fisher information;
* four students learn digits 5–9 from 20 examples per class (16 train, 4 validation), for a fixed 40 epochs:
  from scratch; fine-tuned from the teacher with L2-SP (alpha 0.1, beta 0.01); fine-tuned with EWC (lambda 100 on
  the core and the hidden readout layers); from scratch with RDL towards the teacher's representational
  dissimilarities (correlation distance at ``core`` and ``readout.4``).

The fine-tuned students get a new output layer (``reset=["readout.7"]``: the teacher's learned to rule out 5–9).
Every step is tested on clean digits and under Gaussian noise of std 0.1–0.5 (pixel units, clamped):
``noise_robustness``. The report's robustness plot shows test accuracy against the noise level, one line per
experiment, mean ± sample std over the seeds.

What the results show (test accuracy on digits 5–9, mean ± sample std over seeds 1–3, CPU; the 15 trainings took
3 min 41 s on 2 cores shared with other work at a load of about 12, 37 s of CPU time):

============================  =============  =============  =============
student                       clean          noise 0.3      noise 0.5
============================  =============  =============  =============
from scratch                  0.933 ± 0.010  0.802 ± 0.021  0.620 ± 0.078
L2-SP from the noisy teacher  0.889 ± 0.031  0.731 ± 0.029  0.576 ± 0.040
EWC from the noisy teacher    0.878 ± 0.029  0.739 ± 0.044  0.570 ± 0.047
RDL from the noisy teacher    0.933 ± 0.019  0.811 ± 0.020  0.626 ± 0.022
============================  =============  =============  =============

The teacher itself is robust on its own classes (0.978 ± 0.020 clean, 0.759 ± 0.014 at noise 0.5 on digits 0–4),
but none of the students inherits that robustness on digits 5–9: every student loses about 0.3 accuracy between
clean inputs and noise 0.5. Keeping the parameters near the teacher's costs clean accuracy against training from
scratch (L2-SP 0.044, EWC 0.055 less, more than the seeds' spread) and buys no robustness; RDL's students match
the ones trained from scratch within the spread. Three seeds give a spread of 0.01–0.08; add seeds to narrow it.
"""
from nntransfer import Description, Experiment, TransferExperiment
from nntransfer.configs import ImageDatasetConfig, ModelConfig, TrainerConfig

SEEDS = (1, 2, 3)
NOISE_LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # std of Gaussian pixel noise (pixels in [0, 1])

# in_memory: each split as one tensor, batches by index (no per-image PIL work: several times faster here)
digits_0_4 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[0, 1, 2, 3, 4], batch_size=32, in_memory=True,
                                comment="digits 0-4")
digits_5_9 = ImageDatasetConfig(dataset_cls="digits", filter_classes=[5, 6, 7, 8, 9], examples_per_class=20,
                                valid_size=0.2, batch_size=16, in_memory=True, comment="digits 5-9, 20 per class")
lenet = ModelConfig(type="lenet")

# num_threads=1: a LeNet on 8x8 images is too small to split over threads; one is fastest on shared cores
common = dict(optimizer_options={"lr": 0.003}, verbose=False, save_every_n=10, num_threads=1,
              noise_robustness=NOISE_LEVELS)
teacher = TrainerConfig(
    max_iter=20, patience=5, main_loop_modules=["NoiseAugmentation", "EWC"],
    module_options={"NoiseAugmentation": {"std": {0.1: 0.2, 0.2: 0.2, 0.3: 0.2, 0.0: 0.4}, "units": "pixels",
                                          "clamp": True, "fractions": "fixed"},
                    "EWC": {"samples": 512}},
    comment="teacher: noise augmentation", **common)
# a fixed budget for every student: 20 validation examples are too few to stop early on
scratch = TrainerConfig(max_iter=40, early_stopping=False, restore_best=False, comment="from scratch", **common)
# fine-tuned students: a new output layer for the new classes
l2sp = scratch.replace(reset=["readout.7"], main_loop_modules=["L2SP"],
                       module_options={"L2SP": {"alpha": 0.1, "beta": 0.01}}, comment="L2-SP")
ewc = scratch.replace(reset=["readout.7"], main_loop_modules=["EWC"],
                      module_options={"EWC": {"strength": 100.0, "parameters": ["core.*", "readout.1.*",
                                                                               "readout.4.*"]}},
                      comment="EWC")
rdl = scratch.replace(transfer_parameters=False, main_loop_modules=["RDL"],
                      module_options={"RDL": {"layers": ["core", "readout.4"], "distance": "correlation",
                                              "weight": 1.0}},
                      comment="RDL from the noisy teacher")

transfer_experiments = {}
for seed in SEEDS:
    noisy_teacher = Experiment(digits_0_4, lenet, teacher, seed)
    transfer_experiments[Description("from scratch", seed)] = TransferExperiment(
        [Experiment(digits_5_9, lenet, scratch, seed)])
    for name, student in (("L2-SP from the noisy teacher", l2sp), ("EWC from the noisy teacher", ewc),
                          ("RDL from the noisy teacher", rdl)):
        transfer_experiments[Description(name, seed)] = TransferExperiment(
            [noisy_teacher, Experiment(digits_5_9, lenet, student, seed)])
