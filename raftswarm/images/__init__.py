"""Container images on a node: what `docker pull/push/load/save/import/images/rmi/tag` work on, and the root
filesystems tasks run in.

- store.py: the node image store (blobs, layers unpacked once, references, task rootfs overlay mounts),
  with the image errors (errors.py) re-exported;
- archive.py: docker-archive and OCI-layout tarballs (`docker load`, `docker save`);
- registry.py: the registry client (pull and push, driving skopeo against the store's shared blob directory);
- the store's parts, one concept each: manifest.py (manifests, indexes, configs, platform choice),
  unpack.py (layer tar -> directory, safely, with overlay whiteouts), overlay.py (overlay mounts),
  digest.py (content digests);
- samples.py: sample images built from Debian packages, for tests and `cluster up`.
"""
