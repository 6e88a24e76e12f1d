"""Parity of the engine's paths: Broker, compiled kernel, labels' exits and live replay."""
