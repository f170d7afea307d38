"""A local emulator of the Cloudflare Images API, main host and batch host.

``Emulator`` runs it (and a local image origin) in a background thread; the
``migrator emulator`` command runs the same in the foreground.
"""

from migrator.emulator.faults import Faults
from migrator.emulator.server import Emulator
from migrator.emulator.settings import RateLimit, Settings

__all__ = ["Emulator", "Faults", "RateLimit", "Settings"]
