"""Pure tracking domain: generic event extraction, step naming, order facts and KPI arithmetic."""
