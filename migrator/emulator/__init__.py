"""A local emulator of the Cloudflare Images API, main host and batch host."""
