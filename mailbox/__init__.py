"""The mailbox: what a participant sees and may do over SFTP (`view`, every access rule),
the inbox files on disk (`storage`) and in the store (`stored`), and their names (`names`).

May import: store. Never the pipeline (a complete upload goes to an injected `TakeIn`),
routing, crypto or the front-ends.
"""
