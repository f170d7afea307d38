"""migrator: move large image libraries into Cloudflare Images, exactly once."""

__version__ = "0.1.0"
