"""criu's RPC protocol: its messages (schema), their encoding (wire), what its
options mean to ckpt (options), and the ``swrk`` server (server)."""
