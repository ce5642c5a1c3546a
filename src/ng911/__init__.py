"""ng911: an NG-9-1-1 ESInet in a box, every SIP hop securable with TLS."""

from ng911 import compiled

__version__ = "0.1.0"

# Before any module of the sans-I/O core is imported: the mypyc build, or pure Python when
# NG911_PURE is set or the compiled modules are older than their source (ng911.compiled).
compiled.choose()
