"""`gwms demo`: the whole stack on one machine, N jobs through it, a live table and a summary."""
