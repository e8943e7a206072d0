"""The local runtime: the real handlers on an embedded AWS emulator (moto)."""
