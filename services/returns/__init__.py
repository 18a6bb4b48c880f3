"""Returns and exchanges from any channel: eligibility, RMAs, receipt, grading, disposition,
refund amounts, exchange replacements; returned goods back on sale at once."""
