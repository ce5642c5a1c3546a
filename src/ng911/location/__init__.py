"""Location: geodetic shapes (RFC 5491), civic addresses (RFC 5139), PIDF-LO, RFC 6442."""
