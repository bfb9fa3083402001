"""Call recordings: what a call's engine heard, played and decided, to look at and to run again."""
