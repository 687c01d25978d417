"""The Suivi: the tracking web application of the BDI (OPTIFLUX.md §8).

`queries` and `pending` hold every query (the access rule is applied there), `app` the thin
Starlette handlers (`create_app`), `auth` sessions/CSRF/lockout, `csv` the exports.
"""
