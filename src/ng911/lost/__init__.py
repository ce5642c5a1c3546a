"""LoST (RFC 5222): the protocol (sans-I/O), the server and client, and boundary stores."""
