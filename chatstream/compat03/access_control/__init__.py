"""ChatStream 0.3's access-control package path. Client roles now live in ``chatstream.serving.client_roles``."""
