"""The lstm family: the transformer's token stream and read-in (icl/model.py), an ``nn.LSTM``
of model.n_layer layers of width model.n_embd, and a linear read-out at the x tokens."""

from __future__ import annotations

import math

from torch import Tensor, nn

from icl.model import ModelConfig, ReadIn, token_width

# Floats per token and unit of width one layer holds for the backward pass: 17 counted from the
# tensors autograd saves in a CPU training step (the layer's input and output, and the oneDNN
# kernel's workspace of gates and cell states, about 16), times ALLOWANCE: gpt2's constants,
# fitted to the peak memory of training steps, are 1.23x its saved tensors (icl/models/gpt2.py).
SAVED_FLOATS = 17
ALLOWANCE = 1.25


class ICLLSTM(ReadIn):
    """Predicts y_i from (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i) for every i at once, as
    ICLTransformer does, with the same tokens ``[x_1, y_1, x_2, y_2, ...]`` (y in coordinate 0;
    ``interleaved_flag`` adds the x/y coordinate) read in by the same linear map. A recurrent
    network reads tokens left to right, so it is causal by construction: ``preds[:, i]``, read at
    token 2i, depends only on ``xs[:, :i+1]`` and ``ys[:, :i]``. No positions: the recurrence
    orders the tokens."""

    def __init__(self, cfg: ModelConfig, n_dims: int) -> None:
        super().__init__(cfg, n_dims)
        self.drop = nn.Dropout(cfg.dropout)
        between = cfg.dropout if cfg.n_layer > 1 else 0.0  # nn.LSTM's dropout acts between layers only
        self.lstm = nn.LSTM(cfg.n_embd, cfg.n_embd, num_layers=cfg.n_layer, batch_first=True, dropout=between)
        self.read_out = nn.Linear(cfg.n_embd, 1)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """Predictions (B, N) from xs (B, N, D) and ys (B, N): preds[:, i] from x_1, y_1, ..., x_i."""
        h = self.tokens(xs, ys)  # (B, T, E)
        # The last y token feeds no prediction: left out (T = 2N - 1 from here on).
        h, _ = self.lstm(self.drop(h[:, :-1]))  # (B, T, E)
        return self.read_out(self.drop(h[:, 0::2]))[..., 0]  # (B, N): read out at the x tokens


def param_count(model: ModelConfig, n_dims: int) -> int:
    """The exact number of parameters of ``ICLLSTM(model, n_dims)``: read-in; per layer the input
    and recurrent weights of the four gates (4E x E each) and their two biases; read-out."""
    E = model.n_embd
    return (token_width(model, n_dims) + 1) * E + model.n_layer * (8 * E * E + 8 * E) + E + 1


def activation_floats(model: ModelConfig, batch: int, n_points: int, fused_attention: bool = False) -> int:
    """Floats one layer holds for the backward pass (see SAVED_FLOATS); no attention."""
    return math.ceil(ALLOWANCE * batch * (2 * n_points - 1) * SAVED_FLOATS * model.n_embd)
