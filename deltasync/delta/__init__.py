"""The delta: what a batch carries to Alma — the expiration records of departed patrons
(departure.py), the file itself (outbox.py), and the batch built from the patrons Alma has
not confirmed (build.py)."""
