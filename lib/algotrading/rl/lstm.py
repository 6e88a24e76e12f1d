"""A layer-normalised LSTM with `torch.nn.LSTM`'s call signature.

Layer normalisation (Ba, Kiros & Hinton 2016, "Layer Normalization", section 3.1) normalises the
input and recurrent contributions to the four gates separately, and the cell state before its
tanh, so the recurrent dynamics stay well scaled whatever the inputs' scale:

    gates = LN(W_ih x_t) + LN(W_hh h_{t-1}) + b        (i, f, g, o: torch's gate order)
    c_t   = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t   = sigmoid(o) * tanh(LN(c_t))

With `layer_norm=False` the three LNs are identities and the module computes exactly what
`nn.LSTM` computes with the same weights (same parameter names), which the tests check. Inputs
are (seq, batch, features) and states ((layers, batch, hidden), (layers, batch, hidden)), as
`nn.LSTM` with `batch_first=False`, so sb3-contrib's RecurrentPPO can use it in place of nn.LSTM.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNormLSTM(nn.Module):
    """`nn.LSTM(input_size, hidden_size, num_layers)` with layer-normalised gates and cell."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 layer_norm: bool = True):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.layer_norm = layer_norm
        self.batch_first = False
        for k in range(num_layers):
            size = input_size if k == 0 else hidden_size
            gates = 4 * hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(gates, size)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(gates, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(gates)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(gates)))
        norm = (lambda n: nn.LayerNorm(n)) if layer_norm else (lambda n: nn.Identity())
        self.norm_ih = nn.ModuleList(norm(4 * hidden_size) for _ in range(num_layers))
        self.norm_hh = nn.ModuleList(norm(4 * hidden_size) for _ in range(num_layers))
        self.norm_c = nn.ModuleList(norm(hidden_size) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: uniform(-1/sqrt(hidden), 1/sqrt(hidden))."""
        bound = self.hidden_size ** -0.5
        for name, p in self.named_parameters():
            if name.startswith(("weight_", "bias_")):
                nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x: (seq, batch, input_size); state: (h, c), each (num_layers, batch, hidden_size),
        zeros if None. Returns (output (seq, batch, hidden_size), (h, c))."""
        if x.dim() != 3:
            raise ValueError(f"want input (seq, batch, features), got shape {tuple(x.shape)}")
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        h_out, c_out = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            bias = getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")
            norm_hh, norm_c = self.norm_hh[k], self.norm_c[k]
            inputs = self.norm_ih[k](x @ w_ih.T)  # every step's input part at once
            h, c = state[0][k], state[1][k]
            outputs = []
            for t in range(x.shape[0]):
                gates = inputs[t] + norm_hh(h @ w_hh.T) + bias
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(norm_c(c))
                outputs.append(h)
            x = torch.stack(outputs)
            h_out.append(h)
            c_out.append(c)
        return x, (torch.stack(h_out), torch.stack(c_out))
