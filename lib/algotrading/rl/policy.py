"""sb3-contrib's recurrent actor-critic policy with the layer-normalised LSTM as its core.

RecurrentPPO builds `nn.LSTM` modules for the actor (and the critic); this subclass swaps them for
`LayerNormLSTM` (same call signature and attributes) and rebuilds the optimiser over the new
parameters. Everything else (feature extractor, MLP heads, the PPO update) is sb3's.
"""

from __future__ import annotations

from typing import Any

from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

from algotrading.rl.lstm import LayerNormLSTM


class LnLstmPolicy(RecurrentActorCriticPolicy):
    """RecurrentActorCriticPolicy whose LSTMs normalise their gates (`layer_norm=False`: a plain
    LSTM computed the same way, for comparison)."""

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any, *args: Any,
                 layer_norm: bool = True, **kwargs: Any):
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)
        self.layer_norm = layer_norm
        size, layers = self.lstm_actor.hidden_size, self.lstm_actor.num_layers
        self.lstm_actor = LayerNormLSTM(self.features_dim, size, layers, layer_norm)
        if self.lstm_critic is not None:
            self.lstm_critic = LayerNormLSTM(self.features_dim, size, layers, layer_norm)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "layer_norm": self.layer_norm}
