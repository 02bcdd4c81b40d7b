"""ModelWrapper: call models that need the task key, or return several outputs, like plain classifiers."""
from __future__ import annotations

import functools

from .base import MainLoopModule, Option, register_module


@register_module("ModelWrapper")
class ModelWrapper(MainLoopModule):
    """Options (``module_options["ModelWrapper"]``):

    * ``task_key_argument``: name of the forward argument that receives the task key (e.g. ``"data_key"``);
    * ``output``: index or key selecting the logits when the model returns a tuple or dict.
    """

    options_declared = {
        "task_key_argument": Option(None, (str, type(None)), "forward argument that receives the task key"),
        "output": Option(None, (int, str, type(None)), "index or key of the logits in a tuple/dict output"),
    }

    def pre_forward(self, model, inputs, task_key, shared_memory):
        argument = self.option("task_key_argument")
        if argument:
            model = functools.partial(model, **{argument: task_key})
        return model, inputs

    def post_forward(self, outputs, loss, targets, **shared_memory):
        selector = self.option("output")
        if selector is not None and isinstance(outputs, (tuple, list, dict)):
            outputs = outputs[selector]
        return outputs, loss, targets
