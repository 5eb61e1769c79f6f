"""Thin Locust users wrapping kalamclient; the run (loadtest/) owns set-up, barrier, drain and verdict."""
from .listener import ListenerUser
from .reader import ReaderUser
from .writer import WriterUser

__all__ = ["WriterUser", "ListenerUser", "ReaderUser"]
