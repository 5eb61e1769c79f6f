"""KalamDB live-query load test. Run: `locust` (settings in locust.conf) — see README.md."""
import loadtest.plugin  # noqa: F401  (registers the options and the run's event hooks)
from users import ListenerUser, ReaderUser, WriterUser  # noqa: F401  (the user classes Locust runs)
