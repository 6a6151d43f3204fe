"""``alvh run``: the long-running daemon.

:mod:`daemon.service.daemon` owns the lifecycle (one asyncio TaskGroup, signals,
checkpoints, reloads) and feeds each chain's blocks through the pure pipeline;
:mod:`~daemon.service.publisher` and :mod:`~daemon.service.store` deliver alerts
at least once through a SQLite outbox; the plugins (:mod:`~daemon.service.http`,
:mod:`~daemon.service.silences`, :mod:`~daemon.service.homeassistant`) see only the
small :class:`~daemon.service.runtime.Runtime` the daemon hands them.
"""
