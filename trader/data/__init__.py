"""Market data: bar files, their binary cache, synthetic bars and normalisation."""
