"""``medvl listen``: a storage SCP beside a PACS, with a durable study state machine on disk."""

from medvl.infer.listener.forward import ForwardConfig, Forwarder, parse_destination
from medvl.infer.listener.scp import ListenerConfig, ListenerStats, StudyListener, StudyProcessor
from medvl.infer.listener.status import healthy, read_status
from medvl.infer.listener.store import Retention, StudyState, StudyStore

__all__ = [
    "ForwardConfig",
    "Forwarder",
    "ListenerConfig",
    "ListenerStats",
    "Retention",
    "StudyListener",
    "StudyProcessor",
    "StudyState",
    "StudyStore",
    "healthy",
    "parse_destination",
    "read_status",
]
