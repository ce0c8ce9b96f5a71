"""Models of the DeepLearningTutorials (lisa-lab/DeepLearningTutorials, the Theano tutorials at
deeplearning.net), read beside the source at commit 11c465105026cf87573937fc2d35ab7543678698.

    model = TheanoLogisticRegression(input_size=784, output_size=10)
"""
from __future__ import annotations

from torch import nn


class TheanoLogisticRegression(nn.Module):
    """code/logistic_sgd.py `LogisticRegression` (lines 52–116): p(y|x) = softmax(xW + b), W (784, 10) and b (10,)
    initialised to zeros (lines 79–95). The softmax and the mean negative log-likelihood (line 147) are the
    trainer's cross-entropy; the model returns the logits xW + b. Stored as nn.Linear's (out, in) weight, Wᵀ."""

    linear_and_elementwise_only = True  # one Linear layer: seeds batch as seed-stacked linear layers

    def __init__(self, input_size: int, output_size: int):
        super().__init__()
        self.linear = nn.Linear(input_size, output_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x):
        return self.linear(x)
