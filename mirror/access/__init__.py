"""Who may use the mirror: client credentials (htpasswd, static tokens), checked by one middleware."""
