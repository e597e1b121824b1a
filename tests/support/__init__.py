"""Test-support layer: real docker-registry upstreams, a token server, deterministic images, skopeo."""
