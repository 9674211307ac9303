"""dream's process supervisor: runs a deployment's services on a host or as PID 1 in an image.

Standard library only, and only relative imports inside this package: the services layer copies
this package into images as ``dream_supervisor`` (under Debian's ``/usr/lib/python3/dist-packages``),
where nothing else of dream exists. Its input is a *plan*, the JSON that
``dream.services.plan`` renders from a recipe's deployment (format in docs/services.md).
"""
