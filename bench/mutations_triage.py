"""Automatic mutants (bench/mutation_auto.py) that cannot change any result, each with the reason.

Keyed by `<module> | <original line(s)> -> <mutated line(s)>` (stripped), as the report prints them, so
an entry survives edits that only move lines. They are listed in the report and excluded from the score.
"""
EQUIVALENT: dict[str, str] = {
}
