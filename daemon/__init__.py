"""The alvh service: CLI, config, scheduling, MQTT publishing, outbox, backtest and demo."""

__version__ = "0.1.0"
