"""``lvsd import``: translate a keepalived.conf or an ldirectord.cf into an lvsd TOML config.

Each importer reads its format into a neutral model (``lvsd.migrate.model``), with a note on stderr
for every keyword it cannot translate (file:line); ``lvsd.migrate.emit`` writes the model as TOML.
"""
