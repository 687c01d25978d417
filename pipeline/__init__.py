"""The pipeline: what happens to an upload once the SFTP close (or rename) hands it over.

spool (take it in, durably, and commit its job) → workers (run each job in a worker
thread, retry, resume after a crash) → prepare (decrypt, check, keep the contents, seal) →
plan (name and record the outputs, one transaction) → place (make the outputs appear).

May import: `bdi.hub` (the components it is given), routing, crypto (through the hub),
mailbox, store. Never the SFTP or web front-ends.
"""
