"""Reinforcement learning: a gymnasium environment whose fills are the backtest Broker's
(`env`), a layer-normalised LSTM (`lstm`) as the core of sb3-contrib's RecurrentPPO policy
(`policy`), and seeded training, artifacts and test-period evaluation (`train`)."""
