"""Results -> the merged dataset, errors, reports and the gallery."""
