"""ng911: an NG-9-1-1 ESInet in a box, every SIP hop securable with TLS."""

__version__ = "0.1.0"
