"""Measuring calls from their audio (gaps, overlaps, talk ratios), for the records API and the
load-test instruments alike: neither depends on the other through it."""
