"""The ESInet test PKI: CAs, element certificates (RFC 5922 identities) and TLS contexts."""
